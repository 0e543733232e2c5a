"""each month's costs allocated: per billing account (or price-sheet cluster) its billed total, and what each
hub, user and group carries of it by line (direct, shared, idle, unallocated) and per day

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cost_allocation_accounts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("account", sa.String(200), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("cluster", sa.String(200), nullable=False),
        sa.Column("import_id", sa.Integer(), nullable=True),
        sa.Column("billed_micros", sa.BigInteger(), nullable=False),
        sa.Column("billed_cents", sa.BigInteger(), nullable=False),
        sa.Column("allocated_micros", sa.BigInteger(), nullable=False),
        sa.Column("allocated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("usage_until", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("month", "account", name="uq_cost_allocation_accounts_month_account"),
    )
    op.create_table(
        "cost_allocation_lines",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("account", sa.String(200), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("cluster", sa.String(200), nullable=False),
        sa.Column("hub", sa.String(200), nullable=False),
        sa.Column("line", sa.String(20), nullable=False),
        sa.Column("amount_micros", sa.BigInteger(), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_cost_allocation_lines_month_hub", "cost_allocation_lines", ["month", "hub"])
    op.create_table(
        "cost_allocation_days",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("account", sa.String(200), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("hub", sa.String(200), nullable=False),
        sa.Column("line", sa.String(20), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("amount_micros", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_cost_allocation_days_day", "cost_allocation_days", ["day"])
    op.create_index("ix_cost_allocation_days_month", "cost_allocation_days", ["month"])
    op.create_table(
        "cost_allocation_members",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("account", sa.String(200), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("hub", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("amount_micros", sa.BigInteger(), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_cost_allocation_members_month_hub", "cost_allocation_members", ["month", "hub"])


def downgrade() -> None:
    op.drop_index("ix_cost_allocation_members_month_hub", "cost_allocation_members")
    op.drop_table("cost_allocation_members")
    op.drop_index("ix_cost_allocation_days_month", "cost_allocation_days")
    op.drop_index("ix_cost_allocation_days_day", "cost_allocation_days")
    op.drop_table("cost_allocation_days")
    op.drop_index("ix_cost_allocation_lines_month_hub", "cost_allocation_lines")
    op.drop_table("cost_allocation_lines")
    op.drop_table("cost_allocation_accounts")
