"""per-user databases whose user left a hub: when seen gone, when removed, where the last dump is

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "user_databases_gone",
        sa.Column("hub", sa.String(200), primary_key=True),
        sa.Column("username", sa.String(255), primary_key=True),
        sa.Column("gone_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_dump", sa.Text(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("user_databases_gone")
