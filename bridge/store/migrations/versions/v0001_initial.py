"""The first schema: revision counter, tiers, APIs, applications, subscriptions and
signing keys. Written out by hand rather than imported from ``schema.py``: a migration
stays as it was when it shipped, whatever the schema becomes later.

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "sb_revision",
        sa.Column("id", sa.Integer, autoincrement=False, nullable=False),
        sa.Column("value", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sb_revision"),
    )
    op.bulk_insert(
        sa.table("sb_revision", sa.column("id", sa.Integer), sa.column("value", sa.BigInteger)),
        [{"id": 1, "value": 0}],
    )
    op.create_table(
        "sb_tiers",
        sa.Column("name", sa.String, nullable=False),
        sa.Column("document", sa.JSON, nullable=False),
        sa.Column("seed_hash", sa.String(64)),
        sa.PrimaryKeyConstraint("name", name="pk_sb_tiers"),
    )
    op.create_table(
        "sb_apis",
        sa.Column("name", sa.String, nullable=False),
        sa.Column("version", sa.String, nullable=False),
        sa.Column("document", sa.JSON, nullable=False),
        sa.Column("seed_hash", sa.String(64)),
        sa.PrimaryKeyConstraint("name", "version", name="pk_sb_apis"),
    )
    op.create_table(
        "sb_applications",
        sa.Column("client_id", sa.String, nullable=False),
        sa.Column("name", sa.String, nullable=False),
        sa.Column("secret_hash", sa.String, nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("seed_hash", sa.String(64)),
        sa.Column("seed_secret", sa.String(64)),
        sa.PrimaryKeyConstraint("client_id", name="pk_sb_applications"),
    )
    op.create_table(
        "sb_subscriptions",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("client_id", sa.String, nullable=False),
        sa.Column("api", sa.String, nullable=False),
        sa.Column("version", sa.String, nullable=False),
        sa.Column("tier", sa.String, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sb_subscriptions"),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["sb_applications.client_id"],
            name="fk_sb_subscriptions_client_id_sb_applications",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["api", "version"],
            ["sb_apis.name", "sb_apis.version"],
            name="fk_sb_subscriptions_api_version_sb_apis",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tier"], ["sb_tiers.name"], name="fk_sb_subscriptions_tier_sb_tiers"
        ),
        sa.UniqueConstraint(
            "client_id", "api", "version", name="uq_sb_subscriptions_client_id_api_version"
        ),
    )
    op.create_index("ix_sb_subscriptions_api_version", "sb_subscriptions", ["api", "version"])
    op.create_index("ix_sb_subscriptions_tier", "sb_subscriptions", ["tier"])
    op.create_table(
        "sb_signing_keys",
        sa.Column("kid", sa.String, nullable=False),
        sa.Column("algorithm", sa.String, nullable=False),
        sa.Column("pem", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("kid", name="pk_sb_signing_keys"),
        sa.UniqueConstraint("algorithm", name="uq_sb_signing_keys_algorithm"),
    )


def downgrade() -> None:
    for table in (
        "sb_signing_keys",
        "sb_subscriptions",
        "sb_applications",
        "sb_apis",
        "sb_tiers",
        "sb_revision",
    ):
        op.drop_table(table)
