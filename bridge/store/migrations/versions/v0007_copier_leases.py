"""Copier leases of the cluster log: which node copies a channel into Kafka, and the
epoch of its newest copier session (issue 13, CONTRACT §11).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "sb_copier_leases",
        sa.Column("channel", sa.String, nullable=False),
        sa.Column("holder", sa.String(64), nullable=False),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("channel", name="pk_sb_copier_leases"),
    )


def downgrade() -> None:
    op.drop_table("sb_copier_leases")
