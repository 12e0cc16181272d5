"""Objects through the Store API (issue 3, CONTRACT §8): CRUD with Conflict/NotFound, the
revision counter, snapshots, survival across a restart, no plaintext secrets."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from bridge.config import Tier
from bridge.secrets import hash_secret, verify_secret
from bridge.store import (
    ApplicationRecord,
    Conflict,
    NotFound,
    Snapshot,
    Store,
    StoreError,
    SubscriptionRecord,
)
from bridge.store.schema import applications
from tests.store.helpers import make_config, table_rows

ORDERS, STOCK = make_config().apis
HASH = hash_secret("app-secret-123")


def app(client_id: str = "app-1") -> ApplicationRecord:
    return ApplicationRecord(
        client_id=client_id, name=f"{client_id} name", secret_hash=HASH, generation=7
    )


async def stocked(store: Store) -> SubscriptionRecord:
    """A tier, an API and an application subscribed to it."""
    await store.put_tier("Gold", Tier(events_per_minute=60))
    await store.create_api(ORDERS)
    await store.create_application(app())
    return await store.create_subscription("app-1", "Orders", "1.0.0", "Gold")


async def test_apis(store: Store) -> None:
    assert await store.get_api("Orders", "1.0.0") is None
    await store.create_api(ORDERS)
    assert await store.get_api("Orders", "1.0.0") == ORDERS
    with pytest.raises(Conflict, match=r"Orders 1\.0\.0"):
        await store.create_api(ORDERS)

    deprecated = ORDERS.model_copy(update={"state": "DEPRECATED"})
    await store.update_api(deprecated)
    assert await store.get_api("Orders", "1.0.0") == deprecated
    with pytest.raises(NotFound):
        await store.update_api(STOCK)

    await store.delete_api("Orders", "1.0.0")
    assert await store.get_api("Orders", "1.0.0") is None
    with pytest.raises(NotFound):
        await store.delete_api("Orders", "1.0.0")


async def test_deleting_an_api_deletes_its_subscriptions(store: Store) -> None:
    subscription = await stocked(store)
    await store.delete_api("Orders", "1.0.0")
    assert await store.get_subscription(subscription.id) is None
    assert await store.get_application("app-1") == app()


async def test_applications(store: Store) -> None:
    assert await store.get_application("app-1") is None
    await store.create_application(app())
    assert await store.get_application("app-1") == app()
    with pytest.raises(Conflict):
        await store.create_application(app())

    new_hash = hash_secret("another-secret")
    regenerated = await store.set_application_secret("app-1", new_hash)
    assert regenerated.secret_hash == new_hash
    assert regenerated.generation != app().generation  # the old tokens stop working
    assert await store.get_application("app-1") == regenerated
    with pytest.raises(NotFound):
        await store.set_application_secret("nobody", new_hash)

    await store.delete_application("app-1")
    assert await store.get_application("app-1") is None
    with pytest.raises(NotFound):
        await store.delete_application("app-1")


async def test_deleting_an_application_deletes_its_subscriptions(store: Store) -> None:
    subscription = await stocked(store)
    await store.delete_application("app-1")
    assert await store.get_subscription(subscription.id) is None


async def test_subscriptions(store: Store) -> None:
    subscription = await stocked(store)
    assert subscription.state == "ACTIVE"
    assert len(subscription.id) == 32
    assert await store.get_subscription(subscription.id) == subscription
    with pytest.raises(Conflict, match="already subscribed"):
        await store.create_subscription("app-1", "Orders", "1.0.0", "Gold")

    blocked = await store.set_subscription_state(subscription.id, "BLOCKED")
    assert blocked == SubscriptionRecord(
        subscription.id, "app-1", "Orders", "1.0.0", "Gold", "BLOCKED"
    )
    assert await store.get_subscription(subscription.id) == blocked
    with pytest.raises(ValueError, match="ACTIVE, BLOCKED"):
        await store.set_subscription_state(subscription.id, "PAUSED")
    with pytest.raises(NotFound):
        await store.set_subscription_state("0" * 32, "ACTIVE")

    await store.delete_subscription(subscription.id)
    assert await store.get_subscription(subscription.id) is None
    with pytest.raises(NotFound):
        await store.delete_subscription(subscription.id)


async def test_a_subscription_needs_its_application_api_and_tier(store: Store) -> None:
    await stocked(store)
    with pytest.raises(NotFound, match="application nobody"):
        await store.create_subscription("nobody", "Orders", "1.0.0", "Gold")
    with pytest.raises(NotFound, match="API Orders 9"):
        await store.create_subscription("app-1", "Orders", "9", "Gold")
    with pytest.raises(NotFound, match="tier Platinum"):
        await store.create_subscription("app-1", "Orders", "1.0.0", "Platinum")


async def test_tiers(store: Store) -> None:
    await store.put_tier("Gold", Tier(events_per_minute=60))
    await store.put_tier("Gold", Tier(max_connections=2))
    await store.put_tier("Free", Tier())
    assert (await store.snapshot()).tiers == {"Gold": Tier(max_connections=2), "Free": Tier()}
    await store.delete_tier("Free")
    with pytest.raises(NotFound):
        await store.delete_tier("Free")


async def test_a_tier_in_use_cannot_be_deleted(store: Store) -> None:
    subscription = await stocked(store)
    with pytest.raises(Conflict, match="used by 1 subscription"):
        await store.delete_tier("Gold")
    await store.delete_subscription(subscription.id)
    await store.delete_tier("Gold")


async def test_signing_key_is_inserted_once_per_algorithm(store: Store) -> None:
    assert await store.signing_key("ES256") is None
    await store.add_signing_key("k1", "ES256", "PEM-1")
    await store.add_signing_key("k2", "ES256", "PEM-2")  # lost a race: ignored
    await store.add_signing_key("k3", "RS256", "PEM-3")
    assert await store.signing_key("ES256") == ("k1", "PEM-1")
    assert await store.signing_key("RS256") == ("k3", "PEM-3")


async def test_every_mutation_bumps_the_revision_and_nothing_else_does(store: Store) -> None:
    async def reads() -> None:
        await store.snapshot()
        await store.get_api("Orders", "1.0.0")
        await store.get_application("app-1")
        await store.signing_key("ES256")
        await store.ping()

    mutations: list[Callable[[], Awaitable[object]]] = [
        lambda: store.put_tier("Gold", Tier()),
        lambda: store.put_tier("Gold", Tier(events_per_minute=5)),
        lambda: store.create_api(ORDERS),
        lambda: store.update_api(ORDERS.model_copy(update={"state": "BLOCKED"})),
        lambda: store.create_application(app()),
        lambda: store.set_application_secret("app-1", HASH),
        lambda: store.create_subscription("app-1", "Orders", "1.0.0", "Gold"),
        lambda: store.add_signing_key("k1", "ES256", "PEM"),
        lambda: store.create_api(STOCK),
        lambda: store.delete_api("Stock", "2"),
        lambda: store.delete_application("app-1"),
        lambda: store.delete_tier("Gold"),
    ]
    assert await store.revision() == 0
    for expected, mutate in enumerate(mutations, start=1):
        await mutate()
        assert await store.revision() == expected
        await reads()
        assert await store.revision() == expected

    # Refused mutations roll back whole, the bump included.
    failing: list[Callable[[], Awaitable[object]]] = [
        lambda: store.create_api(ORDERS),
        lambda: store.update_api(STOCK),
        lambda: store.delete_tier("Gold"),
        lambda: store.delete_subscription("0" * 32),
    ]
    for mutate in failing:
        with pytest.raises(StoreError):
            await mutate()
    await store.add_signing_key("k2", "ES256", "PEM")  # nothing inserted, nothing changed
    assert await store.revision() == len(mutations)


async def test_snapshot_holds_everything(store: Store) -> None:
    subscription = await stocked(store)
    await store.create_api(STOCK)
    await store.create_application(app("app-0"))
    assert await store.snapshot() == Snapshot(
        revision=6,
        apis=[ORDERS, STOCK],
        applications=[app("app-0"), app("app-1")],
        subscriptions=[subscription],
        tiers={"Gold": Tier(events_per_minute=60)},
    )


async def test_everything_survives_a_restart(store_url: str) -> None:
    async with Store.from_url(store_url) as store:
        await stocked(store)
        await store.add_signing_key("k1", "ES256", "PEM")
        before = await store.snapshot()
    async with Store.from_url(store_url) as store:
        assert await store.snapshot() == before
        assert await store.signing_key("ES256") == ("k1", "PEM")


async def test_secrets_are_stored_only_as_hashes(store_url: str) -> None:
    async with Store.from_url(store_url) as store:
        await store.seed(make_config(secret="seeded-plaintext"))
        await store.create_application(app())
    rows = await table_rows(store_url, applications)
    assert len(rows) == 2
    for row in rows:
        for value in row.values():
            assert "seeded-plaintext" not in str(value)
            assert "app-secret-123" not in str(value)
    seeded = next(row for row in rows if row["client_id"] == "dashboard")
    assert verify_secret("seeded-plaintext", seeded["secret_hash"])


async def test_ping_is_false_when_closed_or_unreachable(store_url: str) -> None:
    assert not await Store.from_url(store_url).ping()
    store = Store.from_url("postgresql://streambridge:hunter22@127.0.0.1:1/none")
    with pytest.raises(StoreError) as refused:
        async with store:
            pass
    assert "hunter22" not in str(refused.value)
    assert "hunter22" not in repr(store)


async def test_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    async with Store.from_url("sqlite:///nested/dir/state.db") as store:
        assert await store.ping()
    assert (tmp_path / "nested" / "dir" / "state.db").is_file()
    for url in ("mysql://u:secret-pw@h/db", "sqlite:///:memory:", "not a url secret-pw"):
        with pytest.raises(StoreError) as refused:
            Store.from_url(url)
        assert "secret-pw" not in str(refused.value)
