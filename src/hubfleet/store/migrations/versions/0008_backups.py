"""backups, disk use and retired hubs: backup runs (restic snapshots), bytes per user home, retirements

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "backup_runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("hub", sa.String(200), nullable=False),
        sa.Column("trigger", sa.String(20), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ok", sa.Boolean(), nullable=True),
        sa.Column("snapshot_id", sa.String(64), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("added_bytes", sa.BigInteger(), nullable=True),
        sa.Column("files", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=False),
    )
    op.create_index("ix_backup_runs_hub_started", "backup_runs", ["hub", "started_at"])
    op.create_table(
        "home_usage",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("hub", sa.String(200), nullable=False),
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_home_usage_hub_at", "home_usage", ["hub", "at"])
    op.create_table(
        "retirements",
        sa.Column("hub", sa.String(200), primary_key=True),
        sa.Column("community", sa.String(200), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("purge_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("archive_dir", sa.Text(), nullable=False),
        sa.Column("snapshot_id", sa.String(64), nullable=True),
        sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("retirements")
    op.drop_index("ix_home_usage_hub_at", "home_usage")
    op.drop_table("home_usage")
    op.drop_index("ix_backup_runs_hub_started", "backup_runs")
    op.drop_table("backup_runs")
