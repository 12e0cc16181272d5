"""The counters a cluster keeps in Redis (CONTRACT §11), on the shared Redis that
``make test`` starts: two ClusterNode objects stand for two gateways."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from fastapi import HTTPException

from bridge.config import ClusterSettings
from gateway.cluster import ClusterNode
from gateway.metrics import Metrics
from gateway.portal.sessions import SignInLimiter
from gateway.shared_limits import key_of
from tests.e2e.cluster_setup import SHARED_REDIS


@pytest.fixture
async def nodes() -> AsyncIterator[tuple[ClusterNode, ClusterNode]]:
    settings = ClusterSettings(redis=SHARED_REDIS, node_ttl=3.0)
    async with ClusterNode(settings, Metrics()) as a, ClusterNode(settings, Metrics()) as b:
        assert not a.degraded and not b.degraded
        yield a, b


async def test_failed_sign_ins_on_one_node_lock_the_account_on_the_other(
    nodes: tuple[ClusterNode, ClusterNode],
) -> None:
    a, b = (SignInLimiter(attempts=3, cluster=node) for node in nodes)
    user = f"user:{uuid.uuid4().hex}"
    await a.failed(user)
    await b.failed(user)
    await a.check(user)  # two of three
    await b.failed(user)
    for limiter in (a, b):
        with pytest.raises(HTTPException) as refused:
            await limiter.check(user)
        assert refused.value.status_code == 429


async def test_a_rolling_window_never_grants_twice_the_limit_after_idling(
    nodes: tuple[ClusterNode, ClusterNode],
) -> None:
    """What a token bucket or GCRA would allow (a full bucket spent, then refilled
    within one window) the sliding log refuses: at most ``limit`` in ANY window."""
    a, b = nodes
    assert a.shared is not None and b.shared is not None
    key = key_of("test", uuid.uuid4().hex)
    window = 3.0
    assert (await a.shared.take(key, 4, 6, window)).granted == 4
    await asyncio.sleep(1.5)  # the clock must move: this is the property under test
    assert (await b.shared.take(key, 4, 6, window)).granted == 2  # 6 in the last 3 s
    await asyncio.sleep(1.6)  # the first 4 left the window, the 2 of b have not (1.4 s slack)
    taken = await a.shared.take(key, 10, 6, window)
    assert (taken.granted, taken.counted) == (4, 6)
