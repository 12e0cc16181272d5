"""Seeding the config file's objects at start (issue 3, the decided rule): absent objects
are inserted, unchanged ones keep what the management API did to them, changed ones are
overwritten from the config, objects made through the API are never touched, and the
revision goes up once when anything changed."""

from __future__ import annotations

import asyncio

import pytest

from bridge.config import Config, Tier
from bridge.secrets import verify_secret
from bridge.store import ApplicationRecord, Snapshot, Store, StoreError
from tests.store.helpers import SECRET, make_config, quick_hash

ORDERS_SUB = {"api": "Orders", "version": "1.0.0", "tier": "Gold"}
STOCK_SUB = {"api": "Stock", "version": "2", "tier": "Free"}


async def test_seeding_inserts_everything_and_bumps_once(store: Store) -> None:
    config = make_config()
    await store.seed(config)
    snapshot = await store.snapshot()
    assert snapshot.revision == 1
    assert snapshot.apis == config.apis
    assert snapshot.tiers == config.tiers
    [application] = snapshot.applications
    assert (application.client_id, application.name) == ("dashboard", "dashboard")
    assert verify_secret(SECRET, application.secret_hash)
    [subscription] = snapshot.subscriptions
    assert (subscription.api, subscription.version, subscription.tier, subscription.state) == (
        "Orders",
        "1.0.0",
        "Gold",
        "ACTIVE",
    )


async def test_an_unchanged_config_keeps_what_the_api_changed(store_url: str) -> None:
    async with Store.from_url(store_url) as store:
        await store.seed(make_config())
        orders = make_config().apis[0]
        await store.update_api(orders.model_copy(update={"state": "DEPRECATED"}))
        await store.put_tier("Gold", Tier(events_per_minute=1))
        [subscription] = (await store.snapshot()).subscriptions
        await store.set_subscription_state(subscription.id, "BLOCKED")
        regenerated = await store.set_application_secret("dashboard", quick_hash("new-one-1"))
        before = await store.snapshot()
    async with Store.from_url(store_url) as store:  # a restart with the same file
        await store.seed(make_config())
        after = await store.snapshot()
    assert after == before
    assert after.apis[0].state == "DEPRECATED"
    assert after.tiers["Gold"] == Tier(events_per_minute=1)
    assert after.subscriptions[0].state == "BLOCKED"
    assert after.applications == [regenerated]


async def test_a_changed_config_overwrites_its_objects(store: Store) -> None:
    await store.seed(make_config())
    orders = make_config().apis[0]
    await store.update_api(orders.model_copy(update={"state": "BLOCKED"}))
    [subscription] = (await store.snapshot()).subscriptions
    await store.set_subscription_state(subscription.id, "BLOCKED")
    before = await store.snapshot()

    changed = make_config(
        api_description="orders, now with refunds",
        gold_rate=100,
        app_name="dashboard v2",
        subscriptions=[{**ORDERS_SUB, "tier": "Free"}, STOCK_SUB],
    )
    await store.seed(changed)
    after = await store.snapshot()

    assert after.revision == before.revision + 1
    assert after.apis == changed.apis  # description and state back to the file's
    assert after.tiers == changed.tiers
    [application] = after.applications
    # Same secret in the file: the hash and the generation (hence tokens) stay.
    assert application == ApplicationRecord(
        "dashboard",
        "dashboard v2",
        before.applications[0].secret_hash,
        generation=before.applications[0].generation,
    )
    orders_sub, stock_sub = after.subscriptions
    assert (orders_sub.id, orders_sub.tier, orders_sub.state) == (
        subscription.id,
        "Free",
        "BLOCKED",
    )
    assert (stock_sub.api, stock_sub.tier, stock_sub.state) == ("Stock", "Free", "ACTIVE")


async def test_a_changed_secret_replaces_the_hash_and_ends_old_tokens(store: Store) -> None:
    await store.seed(make_config())
    [before] = (await store.snapshot()).applications
    await store.seed(make_config(secret="rotated-secret"))
    [application] = (await store.snapshot()).applications
    assert application.generation != before.generation
    assert verify_secret("rotated-secret", application.secret_hash)
    assert not verify_secret(SECRET, application.secret_hash)


async def test_objects_made_through_the_api_are_never_touched(store: Store) -> None:
    # Made through the API first, under the same keys the config file uses.
    await store.put_tier("Gold", Tier(max_connections=1))
    await store.create_api(make_config().apis[0].model_copy(update={"state": "CREATED"}))
    api_hash = quick_hash("made-by-api")
    mine = ApplicationRecord("dashboard", "mine", api_hash)
    await store.create_application(mine)
    await store.put_tier("Own", Tier())
    before = await store.snapshot()

    await store.seed(make_config())
    await store.seed(make_config(gold_rate=5, app_name="other", secret="other-secret"))
    after = await store.snapshot()

    assert after.tiers["Gold"] == Tier(max_connections=1)
    assert after.tiers["Own"] == Tier()
    assert after.apis[0] == before.apis[0]
    assert after.applications == [mine]
    assert after.subscriptions == []  # the API-made application got none from the file
    # The first seed added what was absent (Free, Stock); the second changed nothing.
    assert sorted(after.tiers) == ["Free", "Gold", "Own"]
    assert [api.name for api in after.apis] == ["Orders", "Stock"]
    assert after.revision == before.revision + 1


async def test_two_gateways_seeding_at_once_agree(store_url: str) -> None:
    async with Store.from_url(store_url) as first, Store.from_url(store_url) as second:
        config = make_config()
        await asyncio.gather(first.seed(config), second.seed(config))
        snapshot = await first.snapshot()
        assert snapshot == await second.snapshot()
    assert snapshot.revision == 1
    assert len(snapshot.applications) == len(snapshot.subscriptions) == 1


async def test_a_failing_seed_changes_nothing(store: Store) -> None:
    """Seeding is one transaction: a subscription to an API that exists nowhere (a config
    that skipped semantic checks) fails it after tiers and APIs were written."""
    raw = make_config().model_dump(mode="json")
    raw["applications"][0]["client_secret"] = SECRET
    raw["applications"][0]["subscriptions"].append(
        {"api": "Missing", "version": "1", "tier": "Gold"}
    )
    with pytest.raises(StoreError):
        await store.seed(Config.model_validate(raw))
    assert await store.snapshot() == Snapshot(revision=0)
