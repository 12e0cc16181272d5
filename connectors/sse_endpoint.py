"""An existing SSE server as the source of an API's topics (CONTRACT §13, WHATWG HTML §9.2).

A channel is the topic's url_mapping with its parameters filled; the connector appends it
to the endpoint URL. The hub reads each channel once (``subscribe``), so every client of
the gateway shares one upstream connection per resulting URL. The stream is parsed with
``bridge.wire.sse.SseDecoder``; when it drops or fails, the connector reconnects as a
browser would: after the upstream's ``retry:`` (at least the backoff), with the last
upstream id as ``Last-Event-ID``, so nothing is lost or doubled when the upstream honours
it. An upstream that gives no ids cannot be resumed: a reconnect then yields a ``Gap``.

Cursors are the upstream ids (percent-encoded where they hold more than printable ASCII,
so a client's id carries them). A client resuming from an id the hub no longer holds is
read from the upstream with that id (``read_range``), until the hub's live part begins.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Protocol
from urllib.parse import quote, unquote

import httpx

from bridge.errors import ConnectorError, UpstreamUnavailable
from bridge.event import Event, decode_payload
from bridge.wire.sse import ParsedEvent, SseDecoder
from connectors.base import EARLIEST, AsyncResource, Gap

log = logging.getLogger("streambridge.upstream")
FIRST_DELAY = 0.25  # seconds before the first reconnect; doubled per failure
MAX_DELAY = 30.0
READ_TIMEOUT = 300.0  # a silent upstream is reconnected (losslessly when it gives ids)
RANGE_SECONDS = 30.0  # a resume read from the upstream that never reaches the live part
_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "%")


class Gate(Protocol):
    """Whether a connect may be tried now (the endpoint's suspension), told how it went."""

    def wait(self, now: float) -> float: ...

    def succeeded(self) -> None: ...

    def failed(self, now: float) -> None: ...


class Gauge(Protocol):
    def inc(self, amount: float = 1.0) -> None: ...

    def dec(self, amount: float = 1.0) -> None: ...


def cursor_of(upstream_id: str) -> str:
    return quote(upstream_id, safe=_SAFE)


def upstream_id(cursor: str) -> str:
    return unquote(cursor)


class SseEndpointConnector(AsyncResource):
    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        client: httpx.AsyncClient,
        connect_timeout: float,
        gate: Gate,
        connections: Gauge,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.reconnects = 0
        self._client = client
        self._connect_timeout = connect_timeout
        self._gate = gate
        self._connections = connections
        self._headers = dict(headers or {})

    async def _open(self, stack: AsyncExitStack) -> None:
        pass  # the HTTP client is the gateway's, shared by every endpoint

    async def ready(self) -> bool:
        return True  # a suspended endpoint is reported by the gateway (/readyz)

    async def publish(self, channel: str, event: Event) -> None:
        raise ConnectorError("an SSE endpoint only sends", retriable=False)

    async def position(self, channel: str) -> str | None:
        return None  # the live end is wherever a new connection starts

    def url(self, channel: str) -> str:
        return self.base_url + channel

    @asynccontextmanager
    async def stream(self, channel: str, last_id: str | None) -> AsyncIterator[httpx.Response]:
        """One upstream request, its headers within ``connect_timeout``; raises
        ConnectorError for a failed connect or an answer that is not an event stream."""
        headers = {"accept": "text/event-stream", "cache-control": "no-store", **self._headers}
        if last_id is not None:
            headers["last-event-id"] = upstream_id(last_id)
        timeout = httpx.Timeout(self._connect_timeout, read=READ_TIMEOUT)
        request = self._client.build_request(
            "GET", self.url(channel), headers=headers, timeout=timeout
        )
        try:
            async with asyncio.timeout(self._connect_timeout):
                response = await self._client.send(request, stream=True)
        except (httpx.HTTPError, TimeoutError) as exc:
            reason = f"{type(exc).__name__} {exc}".strip()
            raise UpstreamUnavailable(f"{self.url(channel)}: {reason}") from exc
        try:
            content_type = response.headers.get("content-type", "")
            if response.status_code != 200:
                raise UpstreamUnavailable(f"{self.url(channel)} answered {response.status_code}")
            if not content_type.startswith("text/event-stream"):
                answered = content_type or "no"
                raise UpstreamUnavailable(f"{self.url(channel)} answered {answered} content")
            yield response
        finally:
            await response.aclose()

    def _event(self, channel: str, parsed: ParsedEvent) -> Event:
        return Event(
            channel,
            decode_payload(parsed.data),
            time=time.time(),
            cursor=None if not parsed.id else cursor_of(parsed.id),
            name=parsed.event,
        )

    async def subscribe(
        self, channel: str, from_cursor: str | None = None
    ) -> AsyncIterator[Event | Gap]:
        last = None if from_cursor in (None, EARLIEST) else from_cursor
        delay, retry, connected_before = FIRST_DELAY, 0.0, False
        while True:
            wait = self._gate.wait(time.time())
            if wait > 0:  # suspended: probe again when the period is over
                await asyncio.sleep(wait)
                continue
            try:
                async with self.stream(channel, last) as response:
                    self._gate.succeeded()
                    self._connections.inc()
                    decoder = SseDecoder()
                    try:
                        if connected_before and last is None:
                            # What the upstream sent meanwhile cannot be asked for again.
                            yield Gap("", None)
                        connected_before, delay = True, FIRST_DELAY
                        async for chunk in response.aiter_text():
                            for parsed in decoder.feed(chunk):
                                event = self._event(channel, parsed)
                                if event.cursor is not None:
                                    last = event.cursor
                                yield event
                    finally:
                        self._connections.dec()
                        if decoder.retry is not None:  # kept until another says else
                            retry = decoder.retry / 1000
                log.info("upstream stream ended", extra={"url": self.url(channel)})
            except UpstreamUnavailable as exc:  # logged with the status it answered
                self._gate.failed(time.time())
                fields = {"url": self.url(channel), "error": str(exc)}
                log.warning("upstream failed", extra=fields)
            except httpx.HTTPError as exc:  # the stream broke after it opened
                fields = {"url": self.url(channel), "error": str(exc)}
                log.warning("upstream stream broke", extra=fields)
            self.reconnects += 1
            await asyncio.sleep(max(retry, delay))
            delay = min(delay * 2, MAX_DELAY)

    async def read_range(
        self,
        channel: str,
        from_cursor: str,
        until_cursor: str | None,
        *,
        max_events: int | None = None,
        max_age: float | None = None,
    ) -> AsyncIterator[Event | Gap]:
        """The upstream's events after ``from_cursor`` up to ``until_cursor`` (the hub's
        live part begins after it), read on a connection of their own. A Gap when the
        upstream gives no ids or does not reach ``until_cursor`` within bounds."""
        if from_cursor == EARLIEST:  # an upstream has no "from its beginning"
            yield Gap(from_cursor, None)
            return
        if until_cursor in (None, EARLIEST):
            # The hub has read nothing since it connected (a gateway just started): where
            # its live part begins among the upstream's ids is unknown, so what came
            # between the client's id and it cannot be told apart. Say so.
            yield Gap(from_cursor, None)
            return
        count = 0
        try:
            async with (
                asyncio.timeout(RANGE_SECONDS),
                self.stream(channel, from_cursor) as response,
            ):
                decoder = SseDecoder()
                async for chunk in response.aiter_text():
                    for parsed in decoder.feed(chunk):
                        event = self._event(channel, parsed)
                        if event.cursor is None or (max_events and count >= max_events):
                            yield Gap(from_cursor, None)
                            return
                        yield event
                        count += 1
                        if event.cursor == until_cursor:
                            return
        except TimeoutError:
            yield Gap(from_cursor, None)
        except httpx.HTTPError as exc:
            raise ConnectorError(f"{self.url(channel)}: {exc}") from exc
