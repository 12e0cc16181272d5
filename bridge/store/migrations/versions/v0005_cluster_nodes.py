"""Cluster nodes: each gateway of a cluster renews a heartbeat row, so the others know
how many are live without Redis (CONTRACT §11, on_redis_down: local).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "sb_cluster_nodes",
        sa.Column("node", sa.String(64), nullable=False),
        sa.Column("seen_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("node", name="pk_sb_cluster_nodes"),
    )


def downgrade() -> None:
    op.drop_table("sb_cluster_nodes")
