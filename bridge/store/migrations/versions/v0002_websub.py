"""WebSub subscriptions, the webhook delivery queue and the delivering gateway's lease
(issue 5).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "sb_websub_subscriptions",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("api", sa.String, nullable=False),
        sa.Column("version", sa.String, nullable=False),
        sa.Column("topic", sa.String, nullable=False),
        sa.Column("callback", sa.String, nullable=False),
        sa.Column("client_id", sa.String, nullable=False),
        sa.Column("secret", sa.Text),
        sa.Column("signature", sa.String(16), nullable=False),
        sa.Column("lease_seconds", sa.Integer, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("last_event_id", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_sb_websub_subscriptions"),
        sa.UniqueConstraint(
            "api",
            "version",
            "topic",
            "callback",
            name="uq_sb_websub_subscriptions_api_version_topic_callback",
        ),
    )
    op.create_index(
        "ix_sb_websub_subscriptions_api_version", "sb_websub_subscriptions", ["api", "version"]
    )
    op.create_table(
        "sb_websub_leader",
        sa.Column("id", sa.Integer, autoincrement=False, nullable=False),
        sa.Column("owner", sa.String(32), nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sb_websub_leader"),
    )
    op.create_table(
        "sb_webhook_deliveries",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("webhook_id", sa.String(40), nullable=False),
        sa.Column("subscription_id", sa.String(32), nullable=False),
        sa.Column("api", sa.String, nullable=False),
        sa.Column("version", sa.String, nullable=False),
        sa.Column("topic", sa.String, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("content_type", sa.String, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.Float, nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("last_error", sa.Text),
        sa.PrimaryKeyConstraint("seq", name="pk_sb_webhook_deliveries"),
        sa.UniqueConstraint("webhook_id", name="uq_sb_webhook_deliveries_webhook_id"),
        sqlite_autoincrement=True,  # seqs are never reused (workers read on from the last)
    )
    op.create_index(
        "ix_sb_webhook_deliveries_subscription_id_seq",
        "sb_webhook_deliveries",
        ["subscription_id", "seq"],
    )
    op.create_index("ix_sb_webhook_deliveries_state_api", "sb_webhook_deliveries", ["state", "api"])


def downgrade() -> None:
    op.drop_table("sb_webhook_deliveries")
    op.drop_table("sb_websub_leader")
    op.drop_table("sb_websub_subscriptions")
