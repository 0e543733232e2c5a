"""audit trail and planned maintenance: a deployment's plan reasons and fleet commit; maintenance windows
(deploys) and which failed probes fell in one, so uptime can be shown with and without planned maintenance

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("reasons", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("commit", sa.String(64), nullable=True))
    with op.batch_alter_table("probe_samples") as batch:
        batch.add_column(sa.Column("planned", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("probe_days") as batch:
        batch.add_column(sa.Column("planned", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "maintenance",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("hub", sa.String(200), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
    )
    op.create_index("ix_maintenance_hub", "maintenance", ["hub"])
    op.create_index("ix_maintenance_started_at", "maintenance", ["started_at"])


def downgrade() -> None:
    op.drop_table("maintenance")
    with op.batch_alter_table("probe_days") as batch:
        batch.drop_column("planned")
    with op.batch_alter_table("probe_samples") as batch:
        batch.drop_column("planned")
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("commit")
        batch.drop_column("reasons")
