"""The Connector Protocol every broker implements (STYLE §3)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from bridge.config import Broker, MemoryBroker
from bridge.errors import ConfigError, Problem
from bridge.event import Event

EARLIEST = "earliest"


@dataclass(frozen=True, slots=True)
class Gap:
    """Yielded by ``subscribe`` when ``from_cursor`` is older than what the broker retains."""

    requested: str
    oldest: str | None


class Connector(Protocol):
    name: str

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def subscribe(self, channel: str, from_cursor: str | None = None) -> AsyncIterator[Event | Gap]:
        """Events of ``channel`` after ``from_cursor`` (None: from the live end; EARLIEST:
        from the oldest retained), then live, until the iterator is closed."""
        ...

    async def publish(self, channel: str, event: Event) -> None:
        """Deliver to the backend; returns once the broker has confirmed it."""
        ...

    async def ready(self) -> bool:
        """Whether the broker is reachable now (for /readyz)."""
        ...


def connector_for(
    name: str, settings: Broker, *, retain: int, max_age: float, data_dir: Path | None = None
) -> Connector:
    """The connector of a broker; ``data_dir`` holds the durable replay logs of brokers
    without offsets (None: in memory)."""
    if isinstance(settings, MemoryBroker):
        from connectors.memory import MemoryConnector

        return MemoryConnector(name, retain=retain, max_age=max_age)
    if settings.type == "kafka":
        from connectors.kafka import KafkaConnector

        return KafkaConnector(name, settings, retain=retain, max_age=max_age)
    if settings.type == "mqtt":
        from connectors.mqtt import MqttConnector

        return MqttConnector(name, settings, retain=retain, max_age=max_age, data_dir=data_dir)
    if settings.type == "amqp":
        from connectors.amqp import AmqpConnector

        return AmqpConnector(name, settings, retain=retain, max_age=max_age, data_dir=data_dir)
    if settings.type == "postgres-cdc":
        from connectors.postgres_cdc import PostgresCdcConnector

        return PostgresCdcConnector(
            name, settings, retain=retain, max_age=max_age, data_dir=data_dir
        )
    raise ConfigError(
        [
            Problem(
                f"brokers.{name}.type",
                f"broker type {settings.type} is not available in this build yet",
            )
        ]
    )
