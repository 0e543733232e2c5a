"""cluster versions: each live reading of a Kubernetes cluster's control-plane, node-pool and chart versions

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cluster_versions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("cluster", sa.String(200), nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("provider", sa.String(20), nullable=False),
        sa.Column("region", sa.String(100), nullable=False),
        sa.Column("control_plane", sa.String(20), nullable=False),
        sa.Column("control_plane_version", sa.String(100), nullable=False),
        sa.Column("node_pools", sa.JSON(), nullable=False),
        sa.Column("chart_versions", sa.JSON(), nullable=False),
    )
    op.create_index("ix_cluster_versions_cluster_read_at", "cluster_versions", ["cluster", "read_at"])


def downgrade() -> None:
    op.drop_index("ix_cluster_versions_cluster_read_at", "cluster_versions")
    op.drop_table("cluster_versions")
