"""The state store's tables (SQLAlchemy Core), mirroring :mod:`bridge.store.records`.

This is what the code queries; the migrations under ``migrations/versions`` build it and
are the only thing that changes a database (tests check the two agree). Table names carry
an ``sb_`` prefix because ``gateway.state`` may point at a database the operator also uses
for other things. Constraint names follow one convention so later migrations can name
them, which SQLite's copy-and-move ALTER needs.
"""

from __future__ import annotations

import uuid

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

VERSION_TABLE = "sb_schema_version"

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# One row (id 1). Every mutation increments ``value`` in its own transaction, so other
# gateway processes notice a change by polling one number.
revision = Table(
    "sb_revision",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("value", BigInteger, nullable=False),
)

# ``seed_hash`` is NULL for objects made through the management API; for objects from the
# config file it is the sha256 of their canonical JSON (see bridge.store.seeding).
tiers = Table(
    "sb_tiers",
    metadata,
    Column("name", String, primary_key=True),
    Column("document", JSON, nullable=False),
    Column("seed_hash", String(64)),
)

apis = Table(
    "sb_apis",
    metadata,
    Column("name", String, primary_key=True),
    Column("version", String, primary_key=True),
    Column("document", JSON, nullable=False),  # Api.model_dump(mode="json"), CONTRACT §8
    Column("seed_hash", String(64)),
)

applications = Table(
    "sb_applications",
    metadata,
    Column("client_id", String, primary_key=True),
    Column("name", String, nullable=False),
    Column("secret_hash", String, nullable=False),  # bridge.secrets.hash_secret output
    Column("generation", Integer, nullable=False),
    Column("seed_hash", String(64)),
    Column("seed_secret", String(64)),  # fingerprint of the config's secret, when seeded
)

subscriptions = Table(
    "sb_subscriptions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column(
        "client_id",
        String,
        ForeignKey(applications.c.client_id, ondelete="CASCADE"),
        nullable=False,
    ),
    Column("api", String, nullable=False),
    Column("version", String, nullable=False),
    Column("tier", String, ForeignKey(tiers.c.name), nullable=False),
    Column("state", String(16), nullable=False),
    ForeignKeyConstraint(["api", "version"], [apis.c.name, apis.c.version], ondelete="CASCADE"),
    UniqueConstraint("client_id", "api", "version"),
    Index(None, "api", "version"),
    Index(None, "tier"),
)

# One key per algorithm: the unique ``algorithm`` makes concurrent first starts of several
# gateways agree on one key (insert-if-absent, then read back).
signing_keys = Table(
    "sb_signing_keys",
    metadata,
    Column("kid", String, primary_key=True),
    Column("algorithm", String, nullable=False, unique=True),
    Column("pem", Text, nullable=False),
)

# WebSub subscriptions (CONTRACT §7): one row per (API, version, topic, callback); a
# re-subscription updates it. ``secret`` is kept because every delivery is signed with it.
websub_subscriptions = Table(
    "sb_websub_subscriptions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("api", String, nullable=False),
    Column("version", String, nullable=False),
    Column("topic", String, nullable=False),  # the topic name as requested, e.g. /t/eu
    Column("callback", String, nullable=False),
    Column("client_id", String, nullable=False),
    Column("secret", Text),
    Column("signature", String(16), nullable=False),  # hub | standard
    Column("lease_seconds", Integer, nullable=False),
    Column("expires_at", Float, nullable=False),  # epoch seconds
    Column("created_at", Float, nullable=False),
    # The id of the last event written to the delivery queue for it: after a restart
    # its feed resumes right after it (from the broker when the hub's log has not got it).
    Column("last_event_id", Text),
    UniqueConstraint("api", "version", "topic", "callback"),
    Index(None, "api", "version"),
)

# A subscription being verified holds a slot of its application's tier until it is stored
# or fails (``claimed_until`` bounds a slot whose gateway died meanwhile): counted with the
# stored subscriptions in one transaction, so concurrent requests cannot pass the tier.
websub_slots = Table(
    "sb_websub_slots",
    metadata,
    Column("api", String, primary_key=True),
    Column("version", String, primary_key=True),
    Column("topic", String, primary_key=True),
    Column("callback", String, primary_key=True),
    Column("client_id", String, nullable=False),
    Column("claimed_until", Float, nullable=False),
    Index(None, "client_id", "api", "version"),
)

# Which gateway delivers webhooks (one row, id 1): gateways sharing a store take turns
# through this lease, so each event is delivered by one of them.
websub_leader = Table(
    "sb_websub_leader",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("owner", String(32), nullable=False),
    Column("expires_at", Float, nullable=False),
)

# The webhook delivery queue: a row is written before its first attempt, so it survives
# a restart; ``seq`` orders a subscription's deliveries. A delivered row is deleted; one
# that used up its attempts stays as a dead letter until it is replayed.
webhook_deliveries = Table(
    "sb_webhook_deliveries",
    metadata,
    Column("seq", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column("webhook_id", String(40), nullable=False, unique=True),
    Column("subscription_id", String(32), nullable=False),
    Column("api", String, nullable=False),
    Column("version", String, nullable=False),
    Column("topic", String, nullable=False),
    Column("payload", Text, nullable=False),
    Column("content_type", String, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", Float, nullable=False),
    Column("state", String(8), nullable=False),  # pending | dead
    Column("last_error", Text),
    Index(None, "subscription_id", "seq"),
    Index(None, "state", "api"),
    # Never reuse a seq (SQLite would reuse the largest after a delete): workers read on
    # from the last seq they handled.
    sqlite_autoincrement=True,
)

# Developer portal (CONTRACT §12): accounts (password hashes only), which applications
# each developer owns, and the portal's sessions (publishers: ``username`` NULL). The id of
# a session is the sha256 of its cookie, so a leaked table opens no session.
developers = Table(
    "sb_developers",
    metadata,
    Column("username", String(64), primary_key=True),
    Column("password_hash", String, nullable=False),  # bridge.secrets.hash_secret output
    Column("created_at", Float, nullable=False),
)

developer_applications = Table(
    "sb_developer_applications",
    metadata,
    Column(
        "client_id",
        String,
        ForeignKey(applications.c.client_id, ondelete="CASCADE"),
        primary_key=True,
    ),
    Column(
        "username",
        String(64),
        ForeignKey(developers.c.username, ondelete="CASCADE"),
        nullable=False,
    ),
    Index(None, "username"),
)

portal_sessions = Table(
    "sb_portal_sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column(
        "username",
        String(64),
        ForeignKey(developers.c.username, ondelete="CASCADE"),
    ),
    Column("csrf", String(64), nullable=False),
    Column("expires_at", Float, nullable=False),
)

# Failed portal sign-ins (CONTRACT §12, §4c), one row per failure and key ("user:<name>"
# or "address:<ip>"): every gateway sharing the store counts the same attempts. Rows
# older than the limit's minute are deleted as new ones come.
sign_in_failures = Table(
    "sb_sign_in_failures",
    metadata,
    Column("key", String(200), nullable=False),
    Column("at", Float, nullable=False),
    Index(None, "key", "at"),
)


def new_subscription_id() -> str:
    """Subscription ids are made by the store: random, so they reveal nothing and never
    collide across gateways sharing one database."""
    return uuid.uuid4().hex
