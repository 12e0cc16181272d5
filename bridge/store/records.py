"""What the state store holds, as frozen values (the store's tables map onto these)."""

from __future__ import annotations

from dataclasses import dataclass, field

from bridge.config import Api, Tier
from bridge.secrets import new_generation


@dataclass(frozen=True, slots=True)
class ApplicationRecord:
    client_id: str
    name: str
    secret_hash: str  # bridge.secrets.hash_secret output; never the secret itself
    # Random, new at creation and at each key regeneration (bridge.secrets.new_generation);
    # tokens carry it (claim "sbg").
    generation: int = field(default_factory=new_generation)


@dataclass(frozen=True, slots=True)
class SubscriptionRecord:
    id: str
    client_id: str
    api: str
    version: str
    tier: str
    state: str = "ACTIVE"  # ACTIVE | BLOCKED


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the gateway needs to serve, read in one transaction."""

    revision: int
    apis: list[Api] = field(default_factory=list)
    applications: list[ApplicationRecord] = field(default_factory=list)
    subscriptions: list[SubscriptionRecord] = field(default_factory=list)
    tiers: dict[str, Tier] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WebSubRecord:
    """A verified WebSub subscription (CONTRACT §7)."""

    id: str
    api: str
    version: str
    topic: str  # the topic name as requested, e.g. /t/eu
    callback: str
    client_id: str
    secret: str | None
    signature: str  # hub | standard
    lease_seconds: int
    expires_at: float
    created_at: float = 0.0
    last_event_id: str | None = None  # the last event queued for it (its feed resumes after)


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One webhook delivery of the queue; ``webhook_id`` is stable across retries."""

    seq: int
    webhook_id: str
    subscription_id: str
    api: str
    version: str
    topic: str
    payload: str
    content_type: str
    created_at: float
    attempts: int
    next_attempt_at: float
    state: str  # pending | dead
    last_error: str | None = None
