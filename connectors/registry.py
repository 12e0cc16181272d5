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
from typing import TYPE_CHECKING

from bridge.config import Broker, KafkaBroker, PostgresCdcBroker
from bridge.errors import ConfigError, Problem
from connectors.base import Connector

if TYPE_CHECKING:
    from connectors.cluster.appender import Leases

# type -> (module, class), called as ``cls(name, settings, retain=..., max_age=...,
# max_bytes=..., data_dir=...)``.
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
    max_bytes: int | None = None,
    data_dir: Path | None = None,
    on_task_failure: Callable[[str], None] | None = None,
) -> Connector:
    """The connector of broker ``name``; ``retain``/``max_age``/``max_bytes`` size the
    replay logs of brokers without offsets, ``data_dir`` holds them durably (None: in memory);
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
    connector = cls(
        name, settings, retain=retain, max_age=max_age, max_bytes=max_bytes, data_dir=data_dir
    )
    connector.on_task_failure = on_task_failure
    return connector


# Broker types a cluster serves from the cluster log (CONTRACT §11): no offsets of their own.
LOGGED_TYPES = ("mqtt", "amqp", "memory")


def cluster_logged(
    name: str,
    settings: Broker,
    *,
    log: Connector,
    leases: Leases,
    node: str,
    lease_ttl: float,
    on_task_failure: Callable[[str], None] | None = None,
) -> Connector:
    """The connector of broker ``name`` in a cluster with ``cluster.log``: its channels
    served from their copy in ``log`` (the Kafka connector of that broker)."""
    from connectors.cluster import ClusterLog
    from connectors.kafka import KafkaConnector

    if not isinstance(log, KafkaConnector) or settings.type not in LOGGED_TYPES:
        raise ConfigError(
            [Problem("cluster.log", f"broker {name} cannot be served from {log.name}")]
        )
    assert not isinstance(settings, KafkaBroker | PostgresCdcBroker)
    connector = ClusterLog(name, settings, log=log, leases=leases, node=node, lease_ttl=lease_ttl)
    connector.on_task_failure = on_task_failure
    return connector
