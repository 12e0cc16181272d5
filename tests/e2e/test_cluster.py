"""Three gateways on one PostgreSQL store, Redis and Kafka behave as one (CONTRACT §11).

Clients are spread over the nodes: a tier's ``max_connections`` and ``events_per_minute``
count the subscription's streams on every node, and a node killed with ``kill -9``
stops counting within ``node_ttl``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from bridge.wire.sse import ParsedEvent
from tests.e2e.cluster_setup import (
    NODE_TTL,
    SECRET,
    TOKEN_ATTEMPTS,
    Cluster,
    NginxFront,
    children_of,
    cluster_config,
    produce,
    running_nodes,
    start_node,
    suffix_of,
    wait_healthy,
)
from tests.e2e.helpers import (
    eventually,
    fetch_token,
    get,
    metric,
    metrics_text,
    room,
    sse_stream,
    token_response,
)
from tests.e2e.receiver import Delivery, Receiver
from tests.e2e.servers import ROOT, Server, stop_server, write_config
from tests.e2e.websub_setup import Hub
from tests.store.helpers import postgres_database


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with postgres_database() as state:
        config = cluster_config(state)
        directory: Path = tmp_path_factory.mktemp("cluster")
        with running_nodes(directory, [config] * 3) as nodes:
            yield Cluster(nodes, config, suffix_of(config))


async def token_of(cluster: Cluster, tier: str, node: Server | None = None) -> str:
    base = (node or cluster.nodes[0]).base_url
    return await fetch_token(base, cluster.client(tier), SECRET)


async def test_every_node_sees_the_others(cluster: Cluster) -> None:
    for node in cluster.nodes:

        async def three(node: Server = node) -> bool:
            return metric(await metrics_text(node.base_url), "streambridge_cluster_nodes") == 3

        await eventually(three, timeout=2 * NODE_TTL, what=f"3 nodes seen on {node.port}")
        text = await metrics_text(node.base_url)
        assert metric(text, "streambridge_cluster_degraded") == 0


async def test_max_connections_counts_the_streams_of_every_node(cluster: Cluster) -> None:
    a, b, c = cluster.nodes
    token = await token_of(cluster, "Pair")
    path = f"/limited/1.0.0/t/{room()}"
    async with AsyncExitStack() as streams:
        first = AsyncExitStack()  # the stream on A, closed on its own below
        streams.push_async_callback(first.aclose)
        await first.enter_async_context(sse_stream(a.base_url, path, token))
        await streams.enter_async_context(sse_stream(b.base_url, path, token))
        refused = await get(c.base_url, path, token)
        assert refused.status_code == 429
        assert refused.json()["code"] == "too_many_connections"
        assert (await get(a.base_url, path, token)).status_code == 429
        await first.aclose()  # the stream on A ends: its place is free on every node

        async def admitted_on_c() -> bool:
            return (await get(c.base_url, path, token)).status_code == 200

        await eventually(admitted_on_c, timeout=2.0, what="a freed place used on C")


async def test_failed_token_requests_count_on_every_node(cluster: Cluster) -> None:
    guess = cluster.client("Guess")
    for attempt in range(TOKEN_ATTEMPTS):  # spread over the nodes
        node = cluster.nodes[attempt % 3]
        assert (await token_response(node.base_url, guess, "wrong")).status_code == 401
    for node in cluster.nodes:  # the right secret is refused too, on every node, for now
        refused = await token_response(node.base_url, guess, SECRET)
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["Retry-After"]) <= 60


async def test_websub_subscriptions_count_on_every_node(
    cluster: Cluster, receiver: Receiver
) -> None:
    """The tier's max_connections holds for WebSub subscriptions taken by any node: the
    slots are claimed in the state store every node shares."""
    a, b = cluster.nodes[:2]
    token = await fetch_token(a.base_url, cluster.client("Hooks"), SECRET)
    on_a, on_b = Hub(a.base_url, token, receiver), Hub(b.base_url, token, receiver)
    try:
        r = room()
        await on_a.subscribe(f"/t/{r}", f"/cluster-a/{r}")
        await on_a.verified(f"/cluster-a/{r}")
        await on_b.subscribe(f"/t/{r}", f"/cluster-b/{r}")  # accepted, then denied

        async def denied() -> list[Delivery] | None:
            return receiver.gets_to(f"/cluster-b/{r}", "denied") or None

        (denial,) = await eventually(denied, timeout=10.0, what="the denial from B")
        assert "allows 1" in denial.query["hub.reason"]
        assert not receiver.gets_to(f"/cluster-b/{r}", "subscribe")
    finally:
        await on_a.aclose()
        await on_b.aclose()


async def read_until_end(node: Server, path: str, token: str) -> list[ParsedEvent]:
    async with sse_stream(node.base_url, path, token, params={"from": "earliest"}) as stream:
        return await stream.rest(timeout=15.0)


async def test_events_per_minute_count_the_deliveries_of_every_node(cluster: Cluster) -> None:
    channel = room()
    await produce(f"cluster.{channel}", 25)
    token = await token_of(cluster, "Ten")
    path = f"/limited/1.0.0/t/{channel}"
    # Three streams of one subscription, one per node, each wanting all 25 events.
    endings = await asyncio.gather(*(read_until_end(n, path, token) for n in cluster.nodes))
    data = [e for events in endings for e in events if e.event in (None, "", "message")]
    assert len(data) == 10  # exactly the tier's 10, over all nodes together
    for events in endings:
        assert events[-1].event == "throttled"
        assert json.loads(events[-1].data)["retry_after"] >= 1
    # Within the same minute, any node throttles the subscription at once.
    late = await read_until_end(cluster.nodes[1], path, token)
    assert [e.event for e in late] == ["throttled"]


async def test_a_killed_node_behind_a_load_balancer(cluster: Cluster, tmp_path: Path) -> None:
    """kill -9 of a node: its leases lapse within node_ttl, and a plain nginx in front
    (proxy_buffering off, next upstream on error) fails its clients over to A."""
    a = cluster.nodes[0]
    channel = room()
    path = f"/limited/1.0.0/t/{channel}"
    await produce(f"cluster.{channel}", 3)
    async with AsyncExitStack() as stack:
        (doomed,) = stack.enter_context(running_nodes(tmp_path / "d", [cluster.config]))
        front = stack.enter_context(NginxFront(tmp_path / "nginx", [a, doomed]))
        free = await fetch_token(front.base_url, cluster.client("Free"), SECRET)
        # proxy_buffering off: events come through while the stream stays open.
        async with sse_stream(front.base_url, path, free, params={"from": "earliest"}) as stream:
            first = await stream.events(3, timeout=10.0)
        single = await token_of(cluster, "Single", doomed)
        await stack.enter_async_context(sse_stream(doomed.base_url, path, single))
        assert (await get(a.base_url, path, single)).status_code == 429

        doomed.process.kill()  # kill -9: no close, no goodbye to Redis
        killed = time.monotonic()
        doomed.process.wait(5)
        # Its lease still counts right after the kill ...
        assert (await get(a.base_url, path, single)).status_code == 429

        async def admitted() -> bool:
            return (await get(a.base_url, path, single)).status_code == 200

        # ... and lapses within node_ttl (plus a request's time).
        await eventually(admitted, timeout=NODE_TTL + 2.0, what="the lapsed lease")
        assert time.monotonic() - killed < NODE_TTL + 2.0

        await produce(f"cluster.{channel}", 3)
        # Every request now fails over to A; a resume id from either node is valid.
        for _ in range(4):
            assert (await get(front.base_url, "/healthz")).status_code == 200
        last = first[-1].id
        assert last is not None
        resumed = {"Last-Event-ID": last}
        async with sse_stream(front.base_url, path, free, headers=resumed) as stream:
            rest = await stream.events(3, timeout=10.0)
    assert [json.loads(e.data)["n"] for e in first + rest] == [0, 1, 2, 0, 1, 2]
    assert len({e.id for e in first + rest}) == 6


async def test_serve_workers_runs_nodes_on_one_port(cluster: Cluster, tmp_path: Path) -> None:
    supervisor = start_node(tmp_path, cluster.config, extra=["--workers", "2"])
    try:
        wait_healthy(supervisor)
        base = supervisor.base_url

        async def five_nodes() -> bool:  # the module's three and two workers
            return metric(await metrics_text(base), "streambridge_cluster_nodes") == 5

        await eventually(five_nodes, timeout=30.0, what="both workers in the cluster")
        workers = children_of(supervisor.process.pid)
        assert len(workers) == 2
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)

        async def replaced() -> bool:
            now = children_of(supervisor.process.pid)
            return len(now) == 2 and victim not in now

        await eventually(replaced, timeout=10.0, what="the killed worker started again")
        for _ in range(4):  # the other worker answered meanwhile, and answers now
            assert (await get(base, "/healthz")).status_code == 200
        survivors = children_of(supervisor.process.pid)
        supervisor.process.send_signal(signal.SIGTERM)
        assert supervisor.process.wait(15) == 0
        assert not any(Path(f"/proc/{pid}").exists() for pid in survivors)
    finally:
        stop_server(supervisor)


def test_serve_workers_without_a_cluster_exits_2_naming_cluster_redis(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"brokers": {}})
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("cluster.redis: ")
