"""server sessions keep the resources they started with and what they used; the identity a sign-in
provider asserts for each hub user

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


_SESSION_COLUMNS = [
    sa.Column("environment", sa.String(200), nullable=True),
    sa.Column("cpu_request", sa.Float(), nullable=True),
    sa.Column("memory_request_bytes", sa.BigInteger(), nullable=True),
    sa.Column("cpu_seconds_used", sa.Float(), nullable=True),
    sa.Column("memory_peak_bytes", sa.BigInteger(), nullable=True),
]


def upgrade() -> None:
    with op.batch_alter_table("server_sessions") as batch:
        for column in _SESSION_COLUMNS:
            batch.add_column(column.copy())
    op.create_table(
        "hub_user_groups",
        sa.Column("hub", sa.String(200), primary_key=True),
        sa.Column("username", sa.String(255), primary_key=True),
        sa.Column("group", sa.String(255), primary_key=True),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("hub_user_groups")
    with op.batch_alter_table("server_sessions") as batch:
        for column in reversed(_SESSION_COLUMNS):
            batch.drop_column(column.name)
