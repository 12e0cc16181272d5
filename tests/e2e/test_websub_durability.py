"""The webhook queue lives in the state store (issue 5 part 3): pending deliveries survive
a restart, and a kill -9 mid-delivery gives at most a duplicate with the same
``webhook-id``, never a loss. Real processes, real SIGKILL."""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager, closing
from pathlib import Path
from typing import Any

import httpx

from tests.e2e import kcat
from tests.e2e.helpers import eventually, fetch_token, room
from tests.e2e.receiver import Receiver
from tests.e2e.servers import running_server
from tests.e2e.websub_setup import HOOKS_SECRET, Hub, wait_posts, websub_config

# Retries go on long enough for the restart to happen while deliveries are pending.
# A restarted gateway waits for the lease its dead predecessor held: keep it short.
PATIENT = {
    "retry": {"max_attempts": 100, "first_delay": "100ms", "max_delay": "300ms"},
    "leader_lease": "2s",
}


PROBE_WAIT = 0.3  # how long a probe may take to arrive before the next one is sent


def pending_rows(directory: Path) -> int:
    with closing(sqlite3.connect(directory / "state.db")) as db:
        (count,) = db.execute(
            "SELECT count(*) FROM sb_webhook_deliveries WHERE state = 'pending'"
        ).fetchone()
    return int(count)


async def lands(condition: Callable[[], bool], within: float) -> bool:
    """Whether ``condition`` comes to hold within ``within`` seconds (polled)."""
    try:
        async with asyncio.timeout(within):
            while not condition():
                await asyncio.sleep(0.05)  # polling interval, not synchronisation
    except TimeoutError:
        return False
    return True


def sent(receiver: Receiver, path: str, key: str) -> list[Any]:
    """The ``key`` field of every JSON body POSTed to ``path`` that has it, in order."""
    bodies = [json.loads(post.body) for post in receiver.posts_to(path)]
    return [body[key] for body in bodies if key in body]


async def fenced(hub: Hub, room: str, path: str, directory: Path, fence: int) -> None:
    """Publish a fence to ``room`` and wait until it is delivered to ``path`` and the
    queue in ``directory``'s store is empty: all queued before it is delivered by then."""
    await hub.publish(room, {"fence": fence})

    async def through() -> bool:
        return fence in sent(hub.receiver, path, "fence") and pending_rows(directory) == 0

    await eventually(through, what=f"fence {fence} delivered")


@asynccontextmanager
async def subscribed_hub(
    base_url: str, receiver: Receiver, topic: str, path: str
) -> AsyncIterator[Hub]:
    """A client of the gateway's hub whose subscription of ``path`` to ``topic`` is
    verified and applied."""
    token = await fetch_token(base_url, "hooks", HOOKS_SECRET)
    async with aclosing(Hub(base_url, token, receiver)) as hub:
        await hub.subscribe(topic, path, **{"hub.signature": "standard"})
        await hub.verified(path)
        yield hub


async def test_pending_deliveries_survive_kill_9(tmp_path: Path, receiver: Receiver) -> None:
    r = room()
    path = f"/durable/{r}"
    behaviour = receiver.behaviour(path)
    behaviour.default = 503  # nothing gets through before the crash
    config = websub_config(tmp_path, **PATIENT)
    with running_server(tmp_path, config) as first:
        async with subscribed_hub(first.base_url, receiver, f"/t/{r}", path) as hub:
            for n in range(10):
                await hub.publish(r, {"n": n})

            async def queued() -> bool:
                return pending_rows(tmp_path) == 10

            await eventually(queued, what="10 deliveries in the store")
            await hub.posts(path, 2)  # attempts are being made and failing
            first.process.kill()
            first.process.wait(10)
    ids_before = {p.headers["webhook-id"] for p in receiver.posts_to(path)}
    behaviour.default = 204
    with running_server(tmp_path, config):

        async def delivered() -> list[int] | None:
            seen: dict[str, int] = {}
            for post in receiver.posts_to(path):
                seen.setdefault(post.headers["webhook-id"], json.loads(post.body)["n"])
            values = sorted(seen.values())
            return values if values == list(range(10)) else None

        await eventually(delivered, timeout=10, what="every event after the restart")

        async def drained() -> bool:
            return pending_rows(tmp_path) == 0

        await eventually(drained, what="queue drained")
    posts = receiver.posts_to(path)
    assert ids_before <= {p.headers["webhook-id"] for p in posts}  # the same ids, retried
    by_id: dict[str, list[int]] = {}
    for post in posts:
        by_id.setdefault(post.headers["webhook-id"], []).append(json.loads(post.body)["n"])
    assert len(by_id) == 10  # one id per event, however often it was attempted
    assert all(len(set(values)) == 1 for values in by_id.values())


async def test_kill_9_mid_delivery_repeats_it_with_the_same_id(
    tmp_path: Path, receiver: Receiver
) -> None:
    r = room()
    path = f"/midflight/{r}"
    behaviour = receiver.behaviour(path)
    release = threading.Event()
    behaviour.hold = release  # the first POST hangs until the gateway is dead
    config = websub_config(tmp_path, **PATIENT)
    try:
        with running_server(tmp_path, config) as first:
            async with subscribed_hub(first.base_url, receiver, f"/t/{r}", path) as hub:
                for n in range(3):
                    await hub.publish(r, {"n": n})
                (in_flight,) = await hub.posts(path, 1)

                async def queued() -> bool:
                    return pending_rows(tmp_path) == 3

                await eventually(queued, what="3 deliveries in the store")
                first.process.kill()
                first.process.wait(10)
    finally:
        behaviour.hold = None
        release.set()
    with running_server(tmp_path, config):
        posts = await wait_posts(receiver, path, 4, timeout=10)
    ids = [p.headers["webhook-id"] for p in posts]
    values = [json.loads(p.body)["n"] for p in posts]
    assert ids[0] == ids[1] == in_flight.headers["webhook-id"]  # the duplicate, same id
    assert values == [0, 0, 1, 2]  # nothing lost, order kept
    assert len(set(ids)) == 3


async def test_gateways_sharing_a_store_deliver_once_and_take_over(
    tmp_path: Path, receiver: Receiver
) -> None:
    """Two gateways on one store: the leader delivers each event once, also for a
    subscription verified by the other; when the leader is killed, the other delivers its
    pending deliveries."""
    r = room()
    path = f"/shared/{r}"
    behaviour = receiver.behaviour(path)
    config = websub_config(tmp_path, **PATIENT)
    with running_server(tmp_path, config) as leader, running_server(tmp_path, config) as other:
        async with subscribed_hub(other.base_url, receiver, f"/t/{r}", path) as hub:
            token = hub.token
        # The leader (first started) reads the memory broker the event goes to.
        async with aclosing(Hub(leader.base_url, token, receiver)) as at_leader:
            probes = itertools.count()

            async def attached() -> bool:  # the leader picks the record up from the store
                probe = next(probes)
                await at_leader.publish(r, {"probe": probe})
                return await lands(lambda: probe in sent(receiver, path, "probe"), PROBE_WAIT)

            await eventually(attached, timeout=5, what="the leader delivering")
            await fenced(at_leader, r, path, tmp_path, 1)  # every probe has landed
            before = len(receiver.posts_to(path))
            await at_leader.publish(r, {"n": "once"})
            # A second delivery of "once" by either gateway would come before the fence
            # is delivered and the queue is empty: the queue keeps each subscription's order.
            await fenced(at_leader, r, path, tmp_path, 2)
            assert sent(receiver, path, "n") == ["once"]  # exactly once
            assert len(receiver.posts_to(path)) == before + 2

            behaviour.default = 503
            for n in range(3):
                await at_leader.publish(r, {"n": n})

            async def queued() -> bool:
                return pending_rows(tmp_path) == 3

            await eventually(queued, what="3 deliveries in the store")
            leader.process.kill()
            leader.process.wait(10)
        behaviour.default = 204

        async def taken_over() -> bool:
            values = {json.loads(p.body).get("n") for p in receiver.posts_to(path)}
            return {0, 1, 2} <= values and pending_rows(tmp_path) == 0

        await eventually(taken_over, timeout=10, what="the other gateway delivering")
        assert other.process.poll() is None


async def test_events_sent_while_the_gateway_is_down_are_delivered_after_it(
    tmp_path: Path, receiver: Receiver
) -> None:
    """A subscription's feed resumes after the last event it queued, from the broker's
    log (Kafka here): a restart loses nothing the broker still holds, and repeats nothing."""
    r = room()
    path = f"/downtime/{r}"
    topic = f"hooks-{r}"
    config = websub_config(tmp_path, **PATIENT)
    config["brokers"]["kafka"] = {"type": "kafka", "bootstrap": "127.0.0.1:9092"}
    config["apis"].append(
        {
            "name": "Orders",
            "version": "1.0.0",
            "context": "/orders",
            "protocol": "websub",
            "broker": "kafka",
            "topics": [{"name": "/placed", "channel": topic}],
        }
    )
    config["applications"][0]["subscriptions"].append(
        {"api": "Orders", "version": "1.0.0", "tier": "Unlimited"}
    )

    async def produce(*ns: int) -> None:
        await kcat.produce(topic, *(json.dumps({"n": n}).encode() for n in ns))

    def numbers() -> list[int]:
        return [json.loads(p.body)["n"] for p in receiver.posts_to(path)]

    with running_server(tmp_path, config) as first:
        token = await fetch_token(first.base_url, "hooks", HOOKS_SECRET)
        async with httpx.AsyncClient(base_url=first.base_url) as client:
            form = {
                "hub.mode": "subscribe",
                "hub.topic": "/placed",
                "hub.callback": receiver.url(path),
            }
            response = await client.post(
                "/orders/1.0.0/hub", data=form, headers={"Authorization": f"Bearer {token}"}
            )
            assert response.status_code == 202, response.text

        async def verified() -> bool:
            return bool(receiver.gets_to(path, "subscribe"))

        await eventually(verified, what="verification of intent")

        async def first_arrives() -> bool:  # the feed reads from the live end
            await produce(0)
            return await lands(lambda: 0 in numbers(), PROBE_WAIT)

        await eventually(first_arrives, timeout=20, what="a first delivery")
        await produce(1, 2)

        async def two() -> bool:
            return {1, 2} <= set(numbers())

        await eventually(two, what="events 1 and 2 delivered")
    await produce(3, 4)  # no gateway runs
    with running_server(tmp_path, config):

        async def all_four() -> bool:
            return {3, 4} <= set(numbers())

        await eventually(all_four, timeout=20, what="events sent during the downtime")
        await produce(5)

        async def five() -> bool:
            return 5 in numbers()

        await eventually(five, what="live again")
    delivered = [n for n in numbers() if n > 0]
    assert delivered == [1, 2, 3, 4, 5], "in order, none lost, none repeated"
