"""The portal's sign-in limit (CONTRACT §12, §4c): failures per key over a rolling minute,
then 429 with Retry-After; other keys unaffected. Time is injected."""

from __future__ import annotations

import pytest
from fastapi import HTTPException

from gateway.portal.sessions import SignInLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_failures_past_the_limit_get_429_until_a_minute_has_passed() -> None:
    clock = Clock()
    limiter = SignInLimiter(attempts=3, clock=clock)
    for _ in range(3):
        await limiter.check("user:ada")
        await limiter.failed("user:ada")
        clock.now += 1
    with pytest.raises(HTTPException) as refused:
        await limiter.check("user:ada")
    assert refused.value.status_code == 429
    assert refused.value.headers is not None
    assert 1 <= int(refused.value.headers["Retry-After"]) <= 60
    await limiter.check("user:grace")  # another account is not slowed
    clock.now += 57  # the first failure is now a minute old, the other two are not
    await limiter.check("user:ada")
    await limiter.failed("user:ada")
    with pytest.raises(HTTPException):
        await limiter.check("user:ada")
