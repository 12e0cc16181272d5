"""Failed portal sign-ins counted in the store, so that every gateway sharing it holds
the same limit (issue 15, CONTRACT §12, §4c).

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
        "sb_sign_in_failures",
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
    )
    op.create_index("ix_sb_sign_in_failures_key_at", "sb_sign_in_failures", ["key", "at"])


def downgrade() -> None:
    op.drop_table("sb_sign_in_failures")
