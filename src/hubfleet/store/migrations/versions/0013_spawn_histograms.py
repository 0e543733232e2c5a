"""hub samples keep the hub's spawn-duration histogram (per status and reason), so that an event's report
and live page can estimate spawn p50/p95 and count failures by cause over any window

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hub_samples") as batch:
        batch.add_column(sa.Column("spawn_histogram", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hub_samples") as batch:
        batch.drop_column("spawn_histogram")
