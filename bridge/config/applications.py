"""The ``tiers`` (business plans) and ``applications`` (seed data) sections (CONTRACT §2)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt, SecretStr, field_validator

from bridge.config.delivery import Delivery
from bridge.config.fields import Strict


class Tier(Strict):
    """Limits of one subscription (CONTRACT §4), unset means unlimited; how its
    connections receive events (CONTRACT §10)."""

    events_per_minute: PositiveInt | None = None
    max_connections: PositiveInt | None = None
    delivery: Delivery = "all"


class SubscriptionSeed(Strict):
    api: str
    version: str
    tier: str
    state: Literal["ACTIVE", "BLOCKED"] = "ACTIVE"


class Application(Strict):
    name: str = Field(min_length=1)
    client_id: str = Field(min_length=1, pattern=r"^[\x21-\x39\x3b-\x7e]+$")
    client_secret: SecretStr
    subscriptions: list[SubscriptionSeed] = []

    @field_validator("client_secret")
    @classmethod
    def _secret(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 8:
            raise ValueError("must be at least 8 characters")
        return value
