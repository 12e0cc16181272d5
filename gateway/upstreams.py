"""The upstream side of endpoint APIs (CONTRACT §13): suspension, SSE connectors, metrics.

Each endpoint of an API (production, sandbox) has a breaker: after ``after_failures``
consecutive failed connects it is suspended for ``for``: new clients are refused with
503 and Retry-After without an attempt, /readyz names it, and
``streambridge_endpoint_suspended{api}`` is 1. After the period the next connect is the
probe. The breaker is the WebSub one (a transition table with an injected clock).

SSE endpoint APIs read through the hub like a broker: one connector per API endpoint,
one hub (and so one upstream connection) per resulting URL.
"""

from __future__ import annotations

import math
import time
from contextlib import AsyncExitStack
from typing import Self

import httpx

from bridge.config import Api, Target
from bridge.errors import EndpointSuspended, NoSandbox
from bridge.sandbox import SANDBOX
from connectors.sse_endpoint import SseEndpointConnector
from gateway.metrics import Metrics
from gateway.websub.breaker import Breaker


def target_of(key_type: str | None) -> Target:
    return "sandbox" if key_type == SANDBOX else "production"


def api_label(api: Api) -> str:
    return f"{api.name}/{api.version}"


class Upstreams:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._breakers: dict[tuple[str, Target], tuple[str, Breaker]] = {}
        self._sse: dict[tuple[str, Target], tuple[str, SseEndpointConnector]] = {}
        self._client: httpx.AsyncClient | None = None
        self._open = False
        self._stack = AsyncExitStack()
        metrics.before_collect.append(self._collect)

    async def __aenter__(self) -> Self:
        self._open = True
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._open, self._client = False, None
        await self._stack.aclose()

    def _http(self) -> httpx.AsyncClient:
        """The client of the SSE endpoints, made when the first one is read: making it
        loads the CA bundle, CPU every gateway start paid even without endpoint APIs."""
        assert self._open, "enter Upstreams (async with) first"
        if self._client is None:
            # Upstream endpoints are the admin's own servers: no proxy from the environment.
            self._client = httpx.AsyncClient(
                trust_env=False, limits=httpx.Limits(max_connections=None)
            )
            self._stack.push_async_callback(self._client.aclose)
        return self._client

    # --- which endpoint, and whether it may be tried -------------------------------------
    def url(self, api: Api, target: Target) -> str:
        """The endpoint URL a client's key reaches; NoSandbox when there is none."""
        assert api.endpoint is not None
        url = api.endpoint.url(target)
        if url is None:
            raise NoSandbox("this API has no sandbox endpoint; use a production key")
        return url

    def breaker(self, api: Api, target: Target) -> Breaker:
        """The endpoint's breaker, anew when its settings changed."""
        assert api.endpoint is not None
        settings = api.endpoint.suspend.model_dump_json() + self.url(api, target)
        known = self._breakers.get((api_label(api), target))
        if known is not None and known[0] == settings:
            return known[1]
        suspend = api.endpoint.suspend
        breaker = Breaker(threshold=suspend.after_failures, cooldown=suspend.for_)
        self._breakers[(api_label(api), target)] = (settings, breaker)
        return breaker

    def admit(self, api: Api, target: Target) -> Breaker:
        """Raise EndpointSuspended while the endpoint is suspended, without an attempt."""
        breaker = self.breaker(api, target)
        remaining = _remaining(breaker, time.time())
        if remaining > 0:
            raise EndpointSuspended(
                f"the {target} endpoint of {api.name} {api.version} is suspended after "
                f"{breaker.failures} failed connects",
                retry_after=max(1, math.ceil(remaining)),
            )
        return breaker

    # --- SSE endpoints read through hubs --------------------------------------------------
    def sse(self, api: Api, target: Target) -> SseEndpointConnector:
        assert api.endpoint is not None
        url = self.url(api, target)
        settings = api.endpoint.model_dump_json()
        known = self._sse.get((api_label(api), target))
        if known is not None and known[0] == settings:
            return known[1]
        connector = SseEndpointConnector(
            source_name(api, target),
            url,
            client=self._http(),
            connect_timeout=api.endpoint.connect_timeout,
            gate=self.breaker(api, target),
            connections=self._metrics.upstream_connections.labels(api_label(api)),
        )
        self._sse[(api_label(api), target)] = (settings, connector)
        return connector

    # --- operations -------------------------------------------------------------------------
    def suspended(self) -> list[str]:
        """The endpoints suspended now, as /readyz names them."""
        now = time.time()
        return [
            f"endpoint:{label}" + ("" if target == "production" else f":{target}")
            for (label, target), (_, breaker) in self._breakers.items()
            if _remaining(breaker, now) > 0
        ]

    def _collect(self) -> None:
        now = time.time()
        gauge = self._metrics.endpoint_suspended
        for child in gauge.children.values():
            child.value = 0.0
        for (label, _), (_, breaker) in self._breakers.items():
            if _remaining(breaker, now) > 0:
                gauge.labels(label).value = 1.0
            else:
                gauge.labels(label)


def source_name(api: Api, target: Target) -> str:
    """What the hubs of an endpoint API read from, as hub keys and task names say it."""
    return api.source if target == "production" else f"{api.source}:{target}"


def _remaining(breaker: Breaker, now: float) -> float:
    if breaker.state != "open":
        return 0.0
    return breaker.opened_at + breaker.cooldown - now
