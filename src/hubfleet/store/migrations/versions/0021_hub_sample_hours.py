"""hourly roll-ups of hub samples (peak running servers, spawn counter deltas per hub and hour) for the
console's fleet charts, back-filled from every hub sample stored (hubfleet.store.metric_rollups)

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hub_sample_hours",
        sa.Column("hub", sa.String(200), primary_key=True),
        sa.Column("hour", sa.Integer(), primary_key=True),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("running_max", sa.Integer(), nullable=True),
        sa.Column("spawn_ok", sa.Float(), nullable=True),
        sa.Column("spawn_failed", sa.Float(), nullable=True),
        sa.Column("spawn_seconds", sa.Float(), nullable=True),
        sa.Column("spawn_timed_ok", sa.Float(), nullable=True),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "hub_sample_days",
        sa.Column("hub", sa.String(200), primary_key=True),
        sa.Column("day", sa.Integer(), primary_key=True),
        sa.Column("running_max", sa.Integer(), nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "hub_sample_hubs",
        sa.Column("hub", sa.String(200), primary_key=True),
        sa.Column("first_hour", sa.Integer(), nullable=False),
        sa.Column("last_hour", sa.Integer(), nullable=False),
    )
    op.create_table(
        "rollup_marks",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("max_id", sa.Integer(), nullable=False),
    )
    # Back-fill every hour of the samples kept so far (35 days at most), in one pass of SQL.
    from hubfleet.store.metric_rollups import roll_up_connection

    roll_up_connection(op.get_bind(), max_rows=None)


def downgrade() -> None:
    op.drop_table("rollup_marks")
    op.drop_table("hub_sample_hubs")
    op.drop_table("hub_sample_days")
    op.drop_table("hub_sample_hours")
