"""WebSub tier slots: a subscription being verified holds a slot of its application's
tier, claimed in the store before the verification request (issue 12, CONTRACT §4c).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "sb_websub_slots",
        sa.Column("api", sa.String, nullable=False),
        sa.Column("version", sa.String, nullable=False),
        sa.Column("topic", sa.String, nullable=False),
        sa.Column("callback", sa.String, nullable=False),
        sa.Column("client_id", sa.String, nullable=False),
        sa.Column("claimed_until", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("api", "version", "topic", "callback", name="pk_sb_websub_slots"),
    )
    op.create_index(
        "ix_sb_websub_slots_client_id_api_version",
        "sb_websub_slots",
        ["client_id", "api", "version"],
    )


def downgrade() -> None:
    op.drop_table("sb_websub_slots")
