"""The WebSub part of the store (bridge/store/webhooks.py), on SQLite and PostgreSQL:
subscriptions keyed by topic and callback, the ordered delivery queue, dead letters and
their replay, and the lease that decides which gateway delivers."""

from __future__ import annotations

import asyncio
import time

import pytest

from bridge.store import Conflict, NotFound, Store
from bridge.store.records import WebSubRecord


def record(id: str, callback: str = "https://a.example/cb", lease: int = 60) -> WebSubRecord:
    now = time.time()
    return WebSubRecord(
        id=id,
        api="Hooks",
        version="1",
        topic="/t/eu",
        callback=callback,
        client_id="app",
        secret="s3cret",
        signature="standard",
        lease_seconds=lease,
        expires_at=now + lease,
        created_at=now,
    )


def row(subscription: str, payload: str) -> dict[str, str]:
    return {
        "subscription_id": subscription,
        "api": "Hooks",
        "version": "1",
        "topic": "/t/eu",
        "payload": payload,
        "content_type": "application/json",
    }


async def test_a_resubscription_updates_the_one_record(store: Store) -> None:
    hooks = store.webhooks
    first = await hooks.upsert_subscription(record("a" * 32))
    again = await hooks.upsert_subscription(record("b" * 32, lease=120))
    assert again.id == first.id and again.lease_seconds == 120
    (only,) = await hooks.subscriptions()
    assert only.lease_seconds == 120 and only.secret == "s3cret"
    other = await hooks.upsert_subscription(record("c" * 32, callback="https://b.example/"))
    assert {s.id for s in await hooks.subscriptions("Hooks")} == {first.id, other.id}
    found = await hooks.find_subscription("Hooks", "1", "/t/eu", "https://b.example/")
    assert found is not None and found.id == other.id
    assert await hooks.subscriptions("Nope") == []


async def test_the_queue_keeps_order_and_never_reuses_a_seq(store: Store) -> None:
    hooks = store.webhooks
    sub = (await hooks.upsert_subscription(record("a" * 32))).id
    await hooks.enqueue([row(sub, f"{n}") for n in range(3)])
    pending = await hooks.pending(sub, 0, 10)
    assert [p.payload for p in pending] == ["0", "1", "2"]
    assert all(p.webhook_id.startswith("msg_") and p.attempts == 0 for p in pending)
    assert await hooks.subscriptions_with_pending() == {sub}
    await hooks.complete([p.seq for p in pending])
    assert await hooks.pending(sub, 0, 10) == []
    await hooks.enqueue([row(sub, "3")])
    (later,) = await hooks.pending(sub, 0, 10)
    assert later.seq > pending[-1].seq  # a worker reading on from its cursor sees it
    assert await hooks.pending(sub, later.seq, 10) == []


async def test_retries_dead_letters_and_replay(store: Store) -> None:
    hooks = store.webhooks
    sub = (await hooks.upsert_subscription(record("a" * 32))).id
    await hooks.enqueue([row(sub, "x"), row(sub, "y")])
    first, _ = await hooks.pending(sub, 0, 10)
    await hooks.reschedule(first.seq, 1, time.time() + 5, "the callback answered 500")
    (retried, _) = await hooks.pending(sub, 0, 10)
    assert retried.attempts == 1 and retried.last_error == "the callback answered 500"
    await hooks.kill(first.seq, 3, "the callback answered 500")
    assert [p.payload for p in await hooks.pending(sub, 0, 10)] == ["y"]
    (dead,) = await hooks.dead_letters("Hooks")
    assert (dead.webhook_id, dead.state, dead.attempts) == (first.webhook_id, "dead", 3)
    assert await hooks.dead_letters("Other") == []
    replayed = await hooks.replay(first.webhook_id)
    assert replayed.subscription_id == sub
    again = await hooks.pending(sub, 0, 10)
    assert [(p.payload, p.attempts) for p in again] == [("x", 0), ("y", 0)]  # order kept
    with pytest.raises(NotFound):
        await hooks.replay(first.webhook_id)  # no longer dead


async def test_ending_a_subscription_drops_its_queue_but_keeps_dead_letters(
    store: Store,
) -> None:
    hooks = store.webhooks
    sub = (await hooks.upsert_subscription(record("a" * 32))).id
    await hooks.enqueue([row(sub, "dead"), row(sub, "pending")])
    dead, _ = await hooks.pending(sub, 0, 10)
    await hooks.kill(dead.seq, 3, "gone")
    assert await hooks.delete_subscription(sub)
    assert not await hooks.delete_subscription(sub)
    assert await hooks.pending(sub, 0, 10) == []
    (letter,) = await hooks.dead_letters()
    with pytest.raises(Conflict):
        await hooks.replay(letter.webhook_id)
    assert await hooks.replay_all() == []


class ManualClock:
    """Epoch seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def test_an_expired_subscription_is_ended_only_if_no_renewal_came(store: Store) -> None:
    """The leader ends a lease it read as run out only if it still is in the store: a
    renewal stored meanwhile keeps the subscription, and its queue."""
    hooks = store.webhooks
    sub = (await hooks.upsert_subscription(record("c" * 32, lease=60))).id
    await hooks.enqueue([row(sub, "kept")])
    now = time.time()
    assert not await hooks.delete_subscription(sub, expired_by=now)  # 60 s left
    assert [p.payload for p in await hooks.pending(sub, 0, 10)] == ["kept"]
    assert await hooks.delete_subscription(sub, expired_by=now + 61)
    assert await hooks.subscriptions() == []


async def test_one_gateway_holds_the_delivery_lease(store_url: str) -> None:
    clock = ManualClock()
    async with Store.from_url(store_url, clock=clock) as store:
        hooks = store.webhooks
        results = await asyncio.gather(
            hooks.claim_leadership("one", 30), hooks.claim_leadership("two", 30)
        )
        assert sorted(results) == [False, True]
        winner, loser = ("one", "two") if results[0] else ("two", "one")
        assert await hooks.claim_leadership(winner, 30)  # renewal
        assert not await hooks.claim_leadership(loser, 30)
        await hooks.release_leadership(loser)  # not the holder: no effect
        assert not await hooks.claim_leadership(loser, 30)
        await hooks.release_leadership(winner)
        assert await hooks.claim_leadership(loser, 5)
        clock.advance(4.9)
        assert not await hooks.claim_leadership(winner, 30)  # not expired yet
        clock.advance(0.2)  # expired: anyone may take it
        assert await hooks.claim_leadership(winner, 30)


async def test_queue_times_come_from_the_clock(store_url: str) -> None:
    clock = ManualClock()
    async with Store.from_url(store_url, clock=clock) as store:
        hooks = store.webhooks
        sub = (await hooks.upsert_subscription(record("a" * 32))).id
        await hooks.enqueue([row(sub, "x")])
        (queued,) = await hooks.pending(sub, 0, 10)
        assert queued.created_at == queued.next_attempt_at == clock.now
        await hooks.kill(queued.seq, 3, "gone")
        clock.advance(60)
        await hooks.replay(queued.webhook_id)
        (replayed,) = await hooks.pending(sub, 0, 10)
        assert replayed.next_attempt_at == clock.now
