"""Developer portal (issue 15, CONTRACT §12): developer accounts, the applications each
owns, and the portal's sessions.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "sb_developers",
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.String, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("username", name="pk_sb_developers"),
    )
    op.create_table(
        "sb_developer_applications",
        sa.Column("client_id", sa.String, nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("client_id", name="pk_sb_developer_applications"),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["sb_applications.client_id"],
            name="fk_sb_developer_applications_client_id_sb_applications",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["username"],
            ["sb_developers.username"],
            name="fk_sb_developer_applications_username_sb_developers",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_sb_developer_applications_username", "sb_developer_applications", ["username"]
    )
    op.create_table(
        "sb_portal_sessions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("username", sa.String(64)),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sb_portal_sessions"),
        sa.ForeignKeyConstraint(
            ["username"],
            ["sb_developers.username"],
            name="fk_sb_portal_sessions_username_sb_developers",
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("sb_portal_sessions")
    op.drop_index("ix_sb_developer_applications_username", "sb_developer_applications")
    op.drop_table("sb_developer_applications")
    op.drop_table("sb_developers")
