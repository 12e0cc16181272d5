"""Redis stopped under a running cluster (CONTRACT §11): ``on_redis_down`` applies,
``/readyz`` names ``redis``, and everything recovers by itself when Redis returns.

The cluster runs on a redis-server of this module's own (the shared one is never
stopped): nodes A and B with ``on_redis_down: local``, node C with ``closed``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.config import ClusterSettings
from bridge.policy import RollingWindow
from gateway.cluster import ClusterNode
from gateway.metrics import Metrics
from tests.e2e.cluster_setup import (
    NODE_TTL,
    SECRET,
    OwnRedis,
    cluster_config,
    produce,
    readyz,
    running_nodes,
    suffix_of,
)
from tests.e2e.helpers import eventually, fetch_token, get, metric, metrics_text, room, sse_stream
from tests.e2e.servers import Server, free_port
from tests.store.helpers import postgres_database


@dataclass(frozen=True)
class RedisCluster:
    redis: OwnRedis
    local: list[Server]  # A and B
    closed: Server  # C
    suffix: str


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    directory: Path = tmp_path_factory.mktemp("redis-down")
    redis = OwnRedis(directory)
    redis.start()
    try:
        with postgres_database() as state:
            local = cluster_config(state, redis.url)
            suffix = suffix_of(local)
            closed = cluster_config(state, redis.url, suffix=suffix, on_redis_down="closed")
            with running_nodes(directory, [local, local, closed]) as (a, b, c):
                yield RedisCluster(redis, [a, b], c, suffix)
    finally:
        redis.stop()


async def redis_check(node: Server) -> tuple[int, bool | None]:
    response = await readyz(node)
    return response.status_code, response.json()["checks"].get("redis")


@asynccontextmanager
async def streams(node: Server, path: str, token: str, count: int) -> AsyncIterator[None]:
    async with AsyncExitStack() as stack:
        for _ in range(count):
            await stack.enter_async_context(sse_stream(node.base_url, path, token))
        yield


async def test_local_and_closed_while_redis_is_down_then_recovery(cluster: RedisCluster) -> None:
    (a, b), c = cluster.local, cluster.closed
    for node in (a, b, c):
        assert await redis_check(node) == (200, True)
    six = await fetch_token(a.base_url, f"six-{cluster.suffix}", SECRET)
    ten = await fetch_token(a.base_url, f"ten-{cluster.suffix}", SECRET)
    path = f"/limited/1.0.0/t/{room()}"

    cluster.redis.stop()

    async def degraded(node: Server = a) -> bool:
        return await redis_check(node) == (200, False)

    # Short timeouts, no retries: redis-py's default retries took 4.5 s to notice. (The
    # deadline holds for the last /readyz asked before it; on a loaded machine its answer
    # came 0.4 s later, so the elapsed time itself is not asserted.)
    await eventually(degraded, timeout=NODE_TTL, what="A reports redis down")
    body = (await readyz(a)).json()
    assert body["status"] == "degraded" and "redis" in body["detail"]
    assert metric(await metrics_text(a.base_url), "streambridge_cluster_degraded") == 1

    async def refused_by_closed() -> bool:
        return (await redis_check(c))[0] == 503

    await eventually(refused_by_closed, timeout=NODE_TTL, what="C (closed) unready")
    refused = await get(c.base_url, path, six)
    assert refused.status_code == 503
    assert refused.json()["code"] == "limits_unavailable"

    # local: three live nodes share the tier's 6 connections, 2 each, without Redis.
    async with streams(a, path, six, 2):
        assert (await get(a.base_url, path, six)).status_code == 429
        # ... and its 10 events per minute, 3 each.
        channel = room()
        await produce(f"cluster.{channel}", 8)
        async with sse_stream(
            b.base_url, f"/limited/1.0.0/t/{channel}", ten, params={"from": "earliest"}
        ) as stream:
            events = await stream.rest(timeout=10.0)
        assert [e.event for e in events] == [None, None, None, "throttled"]

        cluster.redis.start()  # empty: what the nodes counted is put back

        async def recovered() -> bool:
            return all([await redis_check(n) == (200, True) for n in (a, b, c)])

        await eventually(recovered, timeout=2 * NODE_TTL, what="every node sees redis again")
        assert metric(await metrics_text(a.base_url), "streambridge_cluster_degraded") == 0
        # A's two streams count in Redis again: 4 more fit in the cluster, not 5.
        async with streams(b, path, six, 4):
            assert (await get(c.base_url, path, six)).status_code == 429


async def test_open_applies_no_limit_while_redis_is_down() -> None:
    settings = ClusterSettings(
        redis=f"redis://127.0.0.1:{free_port()}/0", node_ttl=2.0, on_redis_down="open"
    )
    async with ClusterNode(settings, Metrics()) as node:
        assert node.degraded  # nothing listens there: found out at start, quickly
        assert node.readiness() == {"redis": False}
        assert "redis" in node.tolerated()
        key = ("client", "Limited", "1.0.0")
        for here in range(5):
            await node.admit(key, 1, here)
        assert await node.take(key, 7, 1, RollingWindow(1), time.time()) == (7, 0)
