"""The ``cluster`` section (CONTRACT §11): what makes many gateways behave as one.

Gateways started with the same ``gateway.state`` and ``cluster`` settings share their
limits through ``redis`` and serve offset-less channels (MQTT, AMQP, memory) from a copy
in the Kafka broker ``log`` names. Which broker ``log`` names, and whether the memory
broker may be used, spans sections: :mod:`bridge.config.checks` reports it.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import field_validator

from bridge.config.fields import Duration, Strict

OnRedisDown = Literal["local", "open", "closed"]


class ClusterSettings(Strict):
    # Shared limits (max_connections, events_per_minute, sign-in and token attempts);
    # without it each node counts for itself.
    redis: str | None = None
    # A kafka broker of ``brokers``: each MQTT, AMQP and memory channel is copied there once.
    log: str | None = None
    # A node that stops renewing its heartbeat and leases stops counting after this long.
    node_ttl: Duration = 10.0
    # Redis unreachable: each node allows limit / live nodes (local), everything (open)
    # or nothing new (closed).
    on_redis_down: OnRedisDown = "local"

    @field_validator("redis")
    @classmethod
    def _redis(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^(rediss?|unix)://\S+$", value):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value
