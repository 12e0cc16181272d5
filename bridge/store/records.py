"""What the state store holds, as frozen values (the store's tables map onto these)."""

from __future__ import annotations

from dataclasses import dataclass, field

from bridge.config import Api, Tier


@dataclass(frozen=True, slots=True)
class ApplicationRecord:
    client_id: str
    name: str
    secret_hash: str  # bridge.secrets.hash_secret output; never the secret itself
    generation: int = 1  # bumped by key regeneration; tokens carry it (claim "sbg")


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
