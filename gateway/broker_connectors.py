"""The connector of each configured broker: its own, or in a cluster with ``cluster.log``
its channels served from their copy in that Kafka broker (CONTRACT §11)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from bridge.catalog import Catalog
from bridge.config import Broker, Config, Replay
from bridge.store import Store
from connectors import LOGGED_TYPES, Connector, cluster_logged, connector_for
from gateway.cluster import ClusterNode


def broker_connector(
    name: str,
    settings: Broker,
    data_dir: Path | None,
    *,
    config: Config,
    catalog: Catalog,
    opened: Mapping[str, Connector],
    store: Store | None,
    cluster: ClusterNode | None,
    on_task_failure: Callable[[str], None],
) -> Connector:
    """MQTT, AMQP and memory channels of a cluster with ``cluster.log`` are read from the
    log (whose connector is opened first); every other broker gets its own connector."""
    log = None if config.cluster is None else config.cluster.log
    if log is not None and cluster is not None and settings.type in LOGGED_TYPES:
        assert store is not None
        return cluster_logged(
            name,
            settings,
            log=opened[log],
            leases=store.copiers,
            node=cluster.node,
            lease_ttl=cluster.settings.node_ttl,
            on_task_failure=on_task_failure,
        )
    replay = Replay.covering([api.replay for api in catalog.apis() if api.broker == name])
    return connector_for(
        name,
        settings,
        retain=replay.max_events,
        max_age=replay.max_age,
        max_bytes=replay.max_bytes,
        data_dir=data_dir,
        on_task_failure=on_task_failure,
    )
