"""events: ready-mode windows, readiness tests and after-event reports

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "event_ready_windows",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("hub", sa.String(200), nullable=False),
        sa.Column("event", sa.String(200), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_by", sa.String(200), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_by", sa.String(200), nullable=True),
        sa.Column("details", sa.JSON(), nullable=True),
    )
    op.create_index("ix_event_ready_windows_hub_started", "event_ready_windows", ["hub", "started_at"])
    op.create_table(
        "event_readiness_tests",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("hub", sa.String(200), nullable=False),
        sa.Column("event", sa.String(200), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
    )
    op.create_index("ix_event_readiness_tests_hub_at", "event_readiness_tests", ["hub", "at"])
    op.create_table(
        "event_reports",
        sa.Column("hub", sa.String(200), primary_key=True),
        sa.Column("event", sa.String(200), primary_key=True),
        sa.Column("made_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("sent_to", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("event_reports")
    op.drop_index("ix_event_readiness_tests_hub_at", "event_readiness_tests")
    op.drop_table("event_readiness_tests")
    op.drop_index("ix_event_ready_windows_hub_started", "event_ready_windows")
    op.drop_table("event_ready_windows")
