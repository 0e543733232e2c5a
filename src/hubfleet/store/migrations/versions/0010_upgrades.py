"""cluster upgrades: upgrade runs and their steps (status, times, output excerpt, hub checks)

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "upgrade_runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("cluster", sa.String(200), nullable=False),
        sa.Column("target", sa.String(20), nullable=False),
        sa.Column("from_version", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("plan", sa.JSON(), nullable=False),
    )
    op.create_index("ix_upgrade_runs_cluster_started", "upgrade_runs", ["cluster", "started_at"])
    op.create_table(
        "upgrade_steps",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("cluster", sa.String(200), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("pool", sa.String(200), nullable=True),
        sa.Column("from_version", sa.String(20), nullable=False),
        sa.Column("to_version", sa.String(20), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("commands", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("output", sa.Text(), nullable=False),
        sa.Column("checks", sa.JSON(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
    )
    op.create_index("ix_upgrade_steps_run_id", "upgrade_steps", ["run_id"])
    op.create_index("ix_upgrade_steps_cluster", "upgrade_steps", ["cluster"])
    op.create_index("ix_upgrade_steps_run_number", "upgrade_steps", ["run_id", "number"])


def downgrade() -> None:
    op.drop_index("ix_upgrade_steps_run_number", "upgrade_steps")
    op.drop_index("ix_upgrade_steps_cluster", "upgrade_steps")
    op.drop_index("ix_upgrade_steps_run_id", "upgrade_steps")
    op.drop_table("upgrade_steps")
    op.drop_index("ix_upgrade_runs_cluster_started", "upgrade_runs")
    op.drop_table("upgrade_runs")
