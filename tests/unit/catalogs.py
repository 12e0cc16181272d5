"""A catalogue straight from a config, without a store: what seeding would leave in one."""

from __future__ import annotations

from bridge.catalog import Catalog
from bridge.config import Config
from bridge.secrets import hash_secret
from bridge.store.records import ApplicationRecord, Snapshot, SubscriptionRecord


def snapshot_of(config: Config) -> Snapshot:
    """The snapshot a store holds right after seeding ``config``."""
    applications, subscriptions = [], []
    for app in config.applications:
        secret_hash = hash_secret(app.client_secret.get_secret_value())
        applications.append(ApplicationRecord(app.client_id, app.name, secret_hash))
        subscriptions += [
            SubscriptionRecord(
                f"{app.client_id}/{s.api}/{s.version}",
                app.client_id,
                s.api,
                s.version,
                s.tier,
                s.state,
            )
            for s in app.subscriptions
        ]
    return Snapshot(0, list(config.apis), applications, subscriptions, dict(config.tiers))


def catalog_of(config: Config) -> Catalog:
    return Catalog(snapshot_of(config))
