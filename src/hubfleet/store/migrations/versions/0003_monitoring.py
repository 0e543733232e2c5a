"""monitoring: probe samples, incidents, alert deliveries, usage (user days, server sessions, hub samples)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

AT = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "probe_samples",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("hub", sa.String(200), nullable=False),
        sa.Column("at", AT, nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("health_status", sa.Integer(), nullable=True),
        sa.Column("api_status", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("cert_expires_at", AT, nullable=True),
    )
    op.create_index("ix_probe_samples_hub_at", "probe_samples", ["hub", "at"])
    op.create_index("ix_probe_samples_at", "probe_samples", ["at"])
    op.create_table(
        "incidents",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("hub", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("rule", sa.String(50), nullable=True),
        sa.Column("started_at", AT, nullable=False),
        sa.Column("resolved_at", AT, nullable=True),
        sa.Column("cause", sa.Text(), nullable=False),
    )
    op.create_index("ix_incidents_hub", "incidents", ["hub"])
    op.create_index("ix_incidents_started_at", "incidents", ["started_at"])
    op.create_index("ix_incidents_resolved_at", "incidents", ["resolved_at"])
    op.create_table(
        "alert_deliveries",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("incident_id", sa.Integer(), nullable=False),
        sa.Column("event", sa.String(20), nullable=False),
        sa.Column("channel", sa.String(200), nullable=False),
        sa.Column("recipient", sa.String(400), nullable=False),
        sa.Column("at", AT, nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
    )
    op.create_index("ix_alert_deliveries_incident_id", "alert_deliveries", ["incident_id"])
    op.create_table(
        "user_days",
        sa.Column("hub", sa.String(200), primary_key=True),
        sa.Column("username", sa.String(255), primary_key=True),
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("identity", sa.String(400), nullable=False),
        sa.Column("first_seen", AT, nullable=False),
        sa.Column("last_seen", AT, nullable=False),
    )
    op.create_index("ix_user_days_day_hub", "user_days", ["day", "hub"])
    op.create_index("ix_user_days_identity", "user_days", ["identity"])
    op.create_table(
        "server_sessions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("hub", sa.String(200), nullable=False),
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("server_name", sa.String(255), nullable=False),
        sa.Column("started_at", AT, nullable=False),
        sa.Column("stopped_at", AT, nullable=True),
        sa.Column("last_activity", AT, nullable=True),
    )
    op.create_index("ix_server_sessions_hub_started", "server_sessions", ["hub", "started_at"])
    op.create_table(
        "hub_samples",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("hub", sa.String(200), nullable=False),
        sa.Column("at", AT, nullable=False),
        sa.Column("running_servers", sa.Integer(), nullable=False),
        sa.Column("users", sa.Integer(), nullable=True),
        sa.Column("active_24h", sa.Integer(), nullable=True),
        sa.Column("active_7d", sa.Integer(), nullable=True),
        sa.Column("active_30d", sa.Integer(), nullable=True),
        sa.Column("spawn_success_total", sa.Float(), nullable=True),
        sa.Column("spawn_failure_total", sa.Float(), nullable=True),
    )
    op.create_index("ix_hub_samples_hub_at", "hub_samples", ["hub", "at"])


def downgrade() -> None:
    tables = ("hub_samples", "server_sessions", "user_days", "alert_deliveries", "incidents", "probe_samples")
    for table in tables:
        op.drop_table(table)
