"""user_days: covering indexes so distinct-people counts read only an index: (day, identity) fleet-wide,
(hub, day, identity) for one hub or a community

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_user_days_day_identity", "user_days", ["day", "identity"])
    op.create_index("ix_user_days_hub_day_identity", "user_days", ["hub", "day", "identity"])


def downgrade() -> None:
    op.drop_index("ix_user_days_hub_day_identity", "user_days")
    op.drop_index("ix_user_days_day_identity", "user_days")
