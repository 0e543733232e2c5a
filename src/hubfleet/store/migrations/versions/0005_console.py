"""web console: accounts' passwords, sessions and API tokens; probe_days (uptime/latency per hub and day,
filled from the samples kept so far); the hub version on probe samples; spawn seconds on hub samples

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("probe_samples") as batch:
        batch.add_column(sa.Column("version", sa.String(40), nullable=True))
    with op.batch_alter_table("hub_samples") as batch:
        batch.add_column(sa.Column("spawn_seconds_total", sa.Float(), nullable=True))
    op.create_table(
        "probe_days",
        sa.Column("hub", sa.String(200), primary_key=True),
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("probes", sa.Integer(), nullable=False),
        sa.Column("ok", sa.Integer(), nullable=False),
        sa.Column("latency_ms_sum", sa.Float(), nullable=False),
        sa.Column("latency_ms_max", sa.Float(), nullable=True),
    )
    op.execute(
        """
        INSERT INTO probe_days (hub, day, probes, ok, latency_ms_sum, latency_ms_max)
        SELECT hub, date(at), count(*),
               sum(CASE WHEN ok THEN 1 ELSE 0 END),
               coalesce(sum(CASE WHEN ok THEN latency_ms ELSE 0 END), 0),
               max(CASE WHEN ok THEN latency_ms END)
        FROM probe_samples GROUP BY hub, date(at)
        """
    )
    op.create_table(
        "console_passwords",
        sa.Column("username", sa.String(255), primary_key=True),
        sa.Column("password_hash", sa.String(400), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "console_sessions",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("username", sa.String(255), nullable=False, index=True),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("method", sa.String(20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, index=True),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("username", sa.String(255), nullable=False, index=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("api_tokens")
    op.drop_table("console_sessions")
    op.drop_table("console_passwords")
    op.drop_table("probe_days")
    with op.batch_alter_table("hub_samples") as batch:
        batch.drop_column("spawn_seconds_total")
    with op.batch_alter_table("probe_samples") as batch:
        batch.drop_column("version")
