"""initial schema: deployments, restarts, checks

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("hub", sa.String(200), nullable=False),
        sa.Column("config_hash", sa.String(128), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("result", sa.String(20), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
    )
    op.create_index("ix_deployments_hub", "deployments", ["hub"])
    op.create_index("ix_deployments_started_at", "deployments", ["started_at"])
    op.create_table(
        "restarts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("hub", sa.String(200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
    )
    op.create_index("ix_restarts_hub", "restarts", ["hub"])
    op.create_index("ix_restarts_at", "restarts", ["at"])
    op.create_table(
        "checks",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("hub", sa.String(200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("failed_step", sa.String(50), nullable=True),
        sa.Column("total_seconds", sa.Float(), nullable=False),
        sa.Column("steps", sa.JSON(), nullable=False),
    )
    op.create_index("ix_checks_hub", "checks", ["hub"])
    op.create_index("ix_checks_at", "checks", ["at"])


def downgrade() -> None:
    op.drop_table("checks")
    op.drop_table("restarts")
    op.drop_table("deployments")
