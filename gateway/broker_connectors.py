"""The connector of each configured broker: its own, or in a cluster with ``cluster.log``
its channels served from their copy in that Kafka broker (CONTRACT §11)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from bridge.catalog import Catalog
from bridge.config import Broker, Config
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
    retain, max_age = retention(catalog, name)
    return connector_for(
        name,
        settings,
        retain=retain,
        max_age=max_age,
        data_dir=data_dir,
        on_task_failure=on_task_failure,
    )


def retention(catalog: Catalog, broker: str) -> tuple[int, float]:
    """A memory broker keeps the longest replay any API on it asks for."""
    replays = [api.replay for api in catalog.apis() if api.broker == broker]
    if not replays:
        return 1000, 600.0
    return max(r.max_events for r in replays), max(r.max_age for r in replays)
