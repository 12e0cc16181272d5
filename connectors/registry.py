"""Which connector serves a broker ``type`` (CONTRACT §1 ``brokers``): one table.

Every connector class takes the same arguments, so adding a broker is one module under
``connectors/`` and one row here. ``base.py`` (the Protocol) imports no connector, so the
connectors import ``base`` and nothing imports them back but this table.

A connector's module, and the broker client it wraps, is imported when a config first
uses its type: a gateway on one broker does not load the clients of the others (they
are a large part of a gateway's start-up time).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from bridge.config import Broker
from bridge.errors import ConfigError, Problem
from connectors.base import Connector

# type -> (module, class), called as ``cls(name, settings, retain=..., max_age=...,
# data_dir=...)``.
CONNECTORS: dict[str, tuple[str, str]] = {
    "memory": ("connectors.memory", "MemoryConnector"),
    "kafka": ("connectors.kafka", "KafkaConnector"),
    "mqtt": ("connectors.mqtt", "MqttConnector"),
    "amqp": ("connectors.amqp", "AmqpConnector"),
    "postgres-cdc": ("connectors.postgres", "PostgresCdcConnector"),
}


def connector_class(broker_type: str) -> Callable[..., Connector] | None:
    """The class serving ``broker_type``, its module imported now; None when unknown."""
    where = CONNECTORS.get(broker_type)
    if where is None:
        return None
    module, name = where
    found: Callable[..., Connector] = getattr(importlib.import_module(module), name)
    return found


def connector_for(
    name: str,
    settings: Broker,
    *,
    retain: int,
    max_age: float,
    data_dir: Path | None = None,
    on_task_failure: Callable[[str], None] | None = None,
) -> Connector:
    """The connector of broker ``name``; ``retain``/``max_age`` size the replay logs of
    brokers without offsets, ``data_dir`` holds them durably (None: in memory);
    ``on_task_failure`` is told of each failure of the connector's background tasks."""
    cls = connector_class(settings.type)
    if cls is None:
        raise ConfigError(
            [
                Problem(
                    f"brokers.{name}.type",
                    f"broker type {settings.type} is not available in this build yet",
                )
            ]
        )
    connector = cls(name, settings, retain=retain, max_age=max_age, data_dir=data_dir)
    connector.on_task_failure = on_task_failure
    return connector
