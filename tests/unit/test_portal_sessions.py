"""The portal's sign-in limit (CONTRACT §12, §4c): failures per key over a rolling minute,
then 429 with Retry-After; other keys unaffected. Failures are counted in the state store,
so two gateways sharing it (two limiters here) hold one limit. Time is injected."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import HTTPException

from bridge.store import Store
from gateway.portal.sessions import SignInLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store.from_url(f"sqlite:///{tmp_path}/state.db") as opened:
        yield opened


def limiter(store: Store, clock: Clock) -> SignInLimiter:
    runtime: Any = SimpleNamespace(store=store)  # what the limiter uses of the Runtime
    return SignInLimiter(runtime, attempts=3, clock=clock)


async def test_failures_on_every_gateway_count_until_a_minute_has_passed(store: Store) -> None:
    clock = Clock()
    one, other = limiter(store, clock), limiter(store, clock)  # two gateways, one store
    for gateway in (one, other, one):
        await gateway.check("user:ada")
        await gateway.failed("user:ada")
        clock.now += 1
    for gateway in (one, other):
        with pytest.raises(HTTPException) as refused:
            await gateway.check("user:ada")
        assert refused.value.status_code == 429
        assert refused.value.headers is not None
        assert int(refused.value.headers["Retry-After"]) == 57  # the first failure ages out
    await other.check("user:grace")  # another account is not slowed
    clock.now += 57  # the first failure is now a minute old, the other two are not
    await other.check("user:ada")
    await other.failed("user:ada")
    with pytest.raises(HTTPException):
        await one.check("user:ada")
    clock.now += 61
    await one.check("user:ada")
    await one.failed("address:10.0.0.1")  # old failures of any key went meanwhile
    assert await store.sign_in_failures(["user:ada"], 0.0) == {}
