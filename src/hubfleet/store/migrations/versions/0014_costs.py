"""costs: imported billing exports (one per billing account and month) and their rows summed per day

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cost_imports",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("account", sa.String(200), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("billed_micros", sa.BigInteger(), nullable=False),
        sa.Column("effective_micros", sa.BigInteger(), nullable=True),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("raw_path", sa.Text(), nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.UniqueConstraint("account", "month", name="uq_cost_imports_account_month"),
    )
    op.create_table(
        "cost_lines",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("import_id", sa.Integer(), nullable=False),
        sa.Column("account", sa.String(200), nullable=False),
        sa.Column("sub_account", sa.String(200), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("cluster", sa.String(200), nullable=True),
        sa.Column("hub", sa.String(200), nullable=True),
        sa.Column("category", sa.String(40), nullable=False),
        sa.Column("service", sa.String(200), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("billed_micros", sa.BigInteger(), nullable=False),
        sa.Column("effective_micros", sa.BigInteger(), nullable=True),
        sa.Column("list_micros", sa.BigInteger(), nullable=True),
        sa.Column("rows", sa.Integer(), nullable=False),
    )
    op.create_index("ix_cost_lines_import", "cost_lines", ["import_id"])
    op.create_index("ix_cost_lines_month_cluster", "cost_lines", ["month", "cluster"])


def downgrade() -> None:
    op.drop_index("ix_cost_lines_month_cluster", "cost_lines")
    op.drop_index("ix_cost_lines_import", "cost_lines")
    op.drop_table("cost_lines")
    op.drop_table("cost_imports")
