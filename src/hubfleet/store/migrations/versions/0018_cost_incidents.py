"""incidents may belong to a community (kind `cost`: budgets); budget alerts already raised per month

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("incidents") as batch:
        batch.add_column(sa.Column("community", sa.String(200), nullable=True))
    op.create_index("ix_incidents_community", "incidents", ["community"])
    op.create_table(
        "budget_alerts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("community", sa.String(200), nullable=False),
        sa.Column("hub", sa.String(200), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("rule", sa.String(50), nullable=False),
        sa.Column("incident_id", sa.Integer(), nullable=True),
        sa.Column("raised_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("community", "hub", "month", "rule", name="uq_budget_alerts_once"),
    )


def downgrade() -> None:
    op.drop_table("budget_alerts")
    op.drop_index("ix_incidents_community", "incidents")
    with op.batch_alter_table("incidents") as batch:
        batch.drop_column("community")
