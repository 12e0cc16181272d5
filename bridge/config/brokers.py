"""The ``brokers`` section (CONTRACT §2): one model per broker type, discriminated on
``type``. What a topic's ``channel`` names depends on the type (see each model)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, PositiveInt, field_validator

from bridge.config.fields import Strict


def _require_scheme(value: str, scheme: str) -> str:
    if not re.match(rf"^{scheme}s?://", value):
        raise ValueError(f"must be an {scheme}:// or {scheme}s:// URL")
    return value


class KafkaBroker(Strict):
    """A channel is a Kafka topic."""

    type: Literal["kafka"]
    bootstrap: str


class MqttBroker(Strict):
    """A channel is an MQTT topic filter (``+`` and ``#`` on subscribe)."""

    type: Literal["mqtt"]
    url: str
    qos: Literal[0, 1, 2] = 1
    client_id: str | None = None

    _url = field_validator("url")(lambda value: _require_scheme(value, "mqtt"))


class AmqpBroker(Strict):
    """A channel is a routing key (a binding pattern on subscribe)."""

    type: Literal["amqp"]
    url: str
    exchange: str = "amq.topic"
    prefetch: PositiveInt = 256

    _url = field_validator("url")(lambda value: _require_scheme(value, "amqp"))


class PostgresCdcBroker(Strict):
    """A channel is a table, ``schema.table``."""

    type: Literal["postgres-cdc"]
    dsn: str
    slot: str = "streambridge"
    publication: str = "streambridge"


class MemoryBroker(Strict):
    """An in-process broker: a channel is any name."""

    type: Literal["memory"]


Broker = Annotated[
    KafkaBroker | MqttBroker | AmqpBroker | PostgresCdcBroker | MemoryBroker,
    Field(discriminator="type"),
]

BROKER_TYPES = ("kafka", "mqtt", "amqp", "postgres-cdc", "memory")
