"""Which connector serves a broker ``type`` (CONTRACT §1 ``brokers``): one table.

Every connector class takes the same arguments, so adding a broker is one module under
``connectors/`` and one row here. ``base.py`` (the Protocol) imports no connector, so the
connectors import ``base`` and nothing imports them back but this table.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bridge.config import Broker, KafkaBroker, PostgresCdcBroker
from bridge.errors import ConfigError, Problem
from connectors.amqp import AmqpConnector
from connectors.base import Connector
from connectors.cluster import ClusterLog
from connectors.cluster.appender import Leases
from connectors.kafka import KafkaConnector
from connectors.memory import MemoryConnector
from connectors.mqtt import MqttConnector
from connectors.postgres import PostgresCdcConnector

# Called as ``cls(name, settings, retain=..., max_age=..., data_dir=...)``.
CONNECTORS: dict[str, Callable[..., Connector]] = {
    "memory": MemoryConnector,
    "kafka": KafkaConnector,
    "mqtt": MqttConnector,
    "amqp": AmqpConnector,
    "postgres-cdc": PostgresCdcConnector,
}


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
    connector_class = CONNECTORS.get(settings.type)
    if connector_class is None:
        raise ConfigError(
            [
                Problem(
                    f"brokers.{name}.type",
                    f"broker type {settings.type} is not available in this build yet",
                )
            ]
        )
    connector = connector_class(name, settings, retain=retain, max_age=max_age, data_dir=data_dir)
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
    if not isinstance(log, KafkaConnector) or settings.type not in LOGGED_TYPES:
        raise ConfigError(
            [Problem("cluster.log", f"broker {name} cannot be served from {log.name}")]
        )
    assert not isinstance(settings, KafkaBroker | PostgresCdcBroker)
    connector = ClusterLog(name, settings, log=log, leases=leases, node=node, lease_ttl=lease_ttl)
    connector.on_task_failure = on_task_failure
    return connector
