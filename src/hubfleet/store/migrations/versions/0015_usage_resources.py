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


def _session_columns() -> list[sa.Column]:  # type: ignore[type-arg]
    """Fresh columns each time (a Column belongs to one table; Column.copy() is deprecated)."""
    return [
        sa.Column("environment", sa.String(200), nullable=True),
        sa.Column("cpu_request", sa.Float(), nullable=True),
        sa.Column("memory_request_bytes", sa.BigInteger(), nullable=True),
        sa.Column("cpu_seconds_used", sa.Float(), nullable=True),
        sa.Column("memory_peak_bytes", sa.BigInteger(), nullable=True),
    ]


def upgrade() -> None:
    with op.batch_alter_table("server_sessions") as batch:
        for column in _session_columns():
            batch.add_column(column)
    op.create_table(
        "hub_user_groups",
        sa.Column("hub", sa.String(200), primary_key=True),
        sa.Column("username", sa.String(255), primary_key=True),
        sa.Column("group", sa.String(255), primary_key=True),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "hub_user_identities",
        sa.Column("hub", sa.String(200), primary_key=True),
        sa.Column("username", sa.String(255), primary_key=True),
        sa.Column("identity", sa.String(400), primary_key=True),
        sa.Column("provider", sa.String(400), nullable=False),
        sa.Column("claim", sa.String(100), nullable=False),
        sa.Column("first_signin", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_signin", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_hub_user_identities_identity", "hub_user_identities", ["identity"])


def downgrade() -> None:
    op.drop_index("ix_hub_user_identities_identity", "hub_user_identities")
    op.drop_table("hub_user_identities")
    op.drop_table("hub_user_groups")
    with op.batch_alter_table("server_sessions") as batch:
        for column in reversed(_session_columns()):
            batch.drop_column(column.name)
