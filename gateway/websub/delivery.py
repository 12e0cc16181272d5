"""One webhook delivery attempt (CONTRACT §7): sign, POST to the checked address, classify.

Used by the per-subscription workers (:mod:`gateway.websub.worker`) and by
``bench/webhooks.py``. The SSRF guard's answer for a callback is kept for a short while,
so a busy subscription does not resolve its host for every event; it is the checked
address that is reused, never a fresh lookup.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from bridge.errors import CallbackError, CallbackRefused
from bridge.wire.websub import SignatureStyle, delivery_headers
from gateway.websub.client import CallbackClient
from gateway.websub.guard import CallbackGuard, Target

TARGET_TTL = 30.0  # seconds a checked callback address is reused


@dataclass(frozen=True, slots=True)
class Outcome:
    delivered: bool
    gone: bool = False  # 410: the subscriber ended the subscription
    error: str | None = None
    host: str = ""  # host:port, the circuit breaker's key


class Deliverer:
    def __init__(self, client: CallbackClient, guard: CallbackGuard, *, timeout: float) -> None:
        self.client = client
        self.guard = guard
        self.timeout = timeout
        self._targets: dict[str, tuple[Target, float]] = {}

    async def target(self, callback: str) -> Target:
        now = time.monotonic()
        cached = self._targets.get(callback)
        if cached is not None and cached[1] > now:
            return cached[0]
        target = await self.guard.target(callback)
        if len(self._targets) > 10_000:
            self._targets.clear()
        self._targets[callback] = (target, now + TARGET_TTL)
        return target

    async def deliver(
        self,
        *,
        callback: str,
        body: bytes,
        content_type: str,
        link: str,
        secret: str | None,
        style: SignatureStyle,
        webhook_id: str,
    ) -> Outcome:
        try:
            target = await self.target(callback)
        except CallbackRefused as exc:
            return Outcome(False, error=exc.detail)
        origin = target.origin
        host = f"{origin.host}:{origin.port}"
        headers = delivery_headers(
            content_type=content_type,
            link=link,
            body=body,
            secret=secret,
            style=style,
            webhook_id=webhook_id,
            timestamp=int(time.time()),
        )
        try:
            answer = await self.client.request(
                "POST", origin, target.target, headers, body, timeout=self.timeout
            )
        except TimeoutError:
            return Outcome(False, error=f"no answer within {self.timeout:g}s", host=host)
        except CallbackError as exc:
            return Outcome(False, error=str(exc), host=host)
        if 200 <= answer.status < 300:
            return Outcome(True, host=host)
        if answer.status == 410:
            return Outcome(False, gone=True, error="410 Gone", host=host)
        return Outcome(False, error=f"the callback answered {answer.status}", host=host)
