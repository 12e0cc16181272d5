"""Real clients for the e2e suite: tokens, an SSE reader, WebSocket publish, metrics."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Close
from websockets.http11 import Response as WsResponse

from bridge.wire.sse import ParsedEvent, decode_stream

T = TypeVar("T")
TIMEOUT = 5.0
HTTP_TIMEOUT = httpx.Timeout(10.0, read=30.0)


def room() -> str:
    """A fresh channel suffix per test (path parameter values: letters, digits, _ ~ -)."""
    return uuid.uuid4().hex[:12]


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


# --- Kafka (the brokers scripts/services.sh starts) ------------------------------------------

KAFKA = "127.0.0.1:9092"


@asynccontextmanager
async def kafka_producer() -> AsyncIterator[AIOKafkaProducer]:
    """A third-party producer for the Kafka tests, waiting for every replica's ack."""
    client = AIOKafkaProducer(bootstrap_servers=KAFKA, acks="all")
    await client.start()
    try:
        yield client
    finally:
        await client.stop()


# --- OAuth2 -------------------------------------------------------------------------------


async def token_response(
    base: str,
    client_id: str,
    secret: str,
    *,
    scope: str | None = None,
    basic: bool = True,
    grant_type: str = "client_credentials",
) -> httpx.Response:
    form = {"grant_type": grant_type}
    if scope is not None:
        form["scope"] = scope
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
        if basic:
            return await client.post(f"{base}/oauth2/token", data=form, auth=(client_id, secret))
        form |= {"client_id": client_id, "client_secret": secret}
        return await client.post(f"{base}/oauth2/token", data=form)


async def fetch_token(base: str, client_id: str, secret: str, scope: str | None = None) -> str:
    response = await token_response(base, client_id, secret, scope=scope)
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    assert isinstance(token, str)
    return token


# --- Server-Sent Events ----------------------------------------------------------------------


class SSEReader:
    """Reads an event stream block by block (a block ends with a blank line)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._chunks = response.aiter_text()
        self._buffer = ""
        self.raw = ""
        self.blocks: list[str] = []
        self.ended = False

    async def _next_block(self) -> str | None:
        while "\n\n" not in self._buffer:
            if self.ended:
                return None
            try:
                chunk = await anext(self._chunks)
            except StopAsyncIteration:
                self.ended = True
                return None
            self._buffer += chunk
            self.raw += chunk
        block, _, self._buffer = self._buffer.partition("\n\n")
        self.blocks.append(block)
        return block

    async def next_block(self, timeout: float = TIMEOUT) -> str | None:
        """The next block, comments included; None when the server ended the stream."""
        return await asyncio.wait_for(self._next_block(), timeout)

    async def next_event(self, timeout: float = TIMEOUT) -> ParsedEvent | None:
        """The next dispatched event (comments and retry-only blocks skipped); None at end."""

        async def read() -> ParsedEvent | None:
            while True:
                block = await self._next_block()
                if block is None:
                    return None
                parsed = decode_stream(block + "\n\n")
                if parsed:
                    return parsed[0]

        return await asyncio.wait_for(read(), timeout)

    async def events(self, count: int, timeout: float = TIMEOUT) -> list[ParsedEvent]:
        deadline = time.monotonic() + timeout
        out: list[ParsedEvent] = []
        while len(out) < count:
            event = await self.next_event(max(0.01, deadline - time.monotonic()))
            assert event is not None, f"stream ended after {len(out)} of {count} events"
            out.append(event)
        return out

    async def rest(self, timeout: float = TIMEOUT) -> list[ParsedEvent]:
        """Every event until the server ends the stream."""
        deadline = time.monotonic() + timeout
        out: list[ParsedEvent] = []
        while (event := await self.next_event(max(0.01, deadline - time.monotonic()))) is not None:
            out.append(event)
        return out

    def block_of(self, event_id: str) -> str:
        return next(b for b in self.blocks if f"id: {event_id}" in b.splitlines())


@asynccontextmanager
async def sse_stream(
    base: str,
    path: str,
    token: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    params: Any = None,
) -> AsyncIterator[SSEReader]:
    """An open SSE stream; asserts 200 and text/event-stream (the subscriber is attached)."""
    async with (
        httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client,
        client.stream(
            "GET", base + path, headers={**bearer(token), **(headers or {})}, params=params
        ) as response,
    ):
        if response.status_code != 200:
            body = await response.aread()
            pytest.fail(f"GET {path}: {response.status_code} {body!r}")
        assert response.headers["content-type"].startswith("text/event-stream")
        yield SSEReader(response)


async def get(
    base: str, path: str, token: str | None = None, *, params: Any = None, **headers: str
) -> httpx.Response:
    """A GET whose body is read only when it is not an event stream (refusals).

    An accepted stream is closed at once, so a wrongly accepted request cannot hang.
    """
    async with (
        httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client,
        client.stream(
            "GET", base + path, headers={**bearer(token), **headers}, params=params
        ) as response,
    ):
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            await response.aread()
        return response


def payloads(events: list[ParsedEvent]) -> list[Any]:
    return [json.loads(e.data) for e in events]


# --- WebSocket ---------------------------------------------------------------------------------


def ws_connect(ws_base: str, path: str, token: str | None = None, **kwargs: Any) -> connect:
    return connect(ws_base + path, additional_headers=bearer(token), open_timeout=TIMEOUT, **kwargs)


async def ws_refusal(ws_base: str, path: str, token: str | None = None) -> WsResponse:
    """The HTTP answer of a refused handshake."""
    with pytest.raises(InvalidStatus) as info:
        async with ws_connect(ws_base, path, token):
            pass
    return info.value.response


async def frames_until_closed(
    ws: ClientConnection, timeout: float = TIMEOUT
) -> tuple[list[str], Close]:
    """Every text frame until the server closes; returns them and its close frame."""
    frames: list[str] = []

    async def read() -> Close:
        while True:
            try:
                message = await ws.recv()
            except ConnectionClosed as exc:
                assert exc.rcvd is not None, f"closed without a close frame: {exc}"
                return exc.rcvd
            assert isinstance(message, str), "events are text frames"
            frames.append(message)

    close = await asyncio.wait_for(read(), timeout)
    return frames, close


async def recv_json(ws: ClientConnection, timeout: float = TIMEOUT) -> Any:
    message = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(message, str), "events are text frames"
    return json.loads(message)


class Publisher:
    """Injects events through a WebSocket ``publish`` topic (the public interface)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, payload: Any) -> None:
        await self.ws.send(payload if isinstance(payload, str) else json.dumps(payload))

    async def send_all(self, payloads: list[Any]) -> None:
        for payload in payloads:
            await self.send(payload)


@asynccontextmanager
async def publisher(ws_base: str, path: str, token: str) -> AsyncIterator[Publisher]:
    async with ws_connect(ws_base, path, token) as ws:
        yield Publisher(ws)


# --- problems, metrics, waiting -------------------------------------------------------------------


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status
    assert isinstance(body["detail"], str) and body["detail"]
    return body  # type: ignore[no-any-return]


async def metrics_text(base: str) -> str:
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
        response = await client.get(f"{base}/metrics")
    assert response.status_code == 200
    return response.text


def metric(text: str, sample: str, **labels: str) -> float:
    """The value of one sample (0.0 when the labelled series does not exist yet)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def samples(text: str, sample: str) -> list[dict[str, str]]:
    """Label sets of every series of one sample name."""
    return [
        dict(s.labels)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == sample
    ]


async def eventually(
    check: Callable[[], Awaitable[T | None]], timeout: float = TIMEOUT, what: str = "condition"
) -> T:
    """Poll ``check`` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not reached within {timeout}s")
        await asyncio.sleep(0.05)  # polling interval, not synchronisation
