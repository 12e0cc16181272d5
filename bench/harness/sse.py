"""Raw SSE clients: hand-written HTTP/1.1 GETs on asyncio TCP connections, the chunked
body and the ``data:`` lines parsed here (WHATWG HTML, "Server-sent events", event stream
interpretation), with no HTTP library in the way of the measurement.

Each payload carries ``seq`` and ``t`` (``time.time_ns()`` at publish); negative ``seq``
marks a warm-up event. A :class:`Tally` counts what its clients received.
"""

from __future__ import annotations

import asyncio
import json
import time
from array import array
from typing import Any


class Tally:
    """What every client of a round adds to; the publisher waits on ``done``."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.deliveries = 0
        self.warm = 0
        self.latencies_us = array("q")
        self.out_of_order = 0
        self.writes = 0
        self.done = asyncio.Event()
        self.warm_target = 0
        self.warmed = asyncio.Event()


def stamp(data: bytes) -> tuple[int, int]:
    """(seq, publish time_ns) of a payload: a cheap scan, JSON decoding as the fallback.

    The gateway re-serialises JSON payloads compactly with keys in order, so the fields
    come out as ``{"seq":N,"t":T,...}``; anything else is decoded properly.
    """
    if data.startswith(b'{"seq":'):
        comma = data.find(b",", 7)
        if data.startswith(b'"t":', comma + 1):
            end = data.find(b",", comma + 5)
            if end > 0:
                return int(data[7:comma]), int(data[comma + 5 : end])
    payload = json.loads(data)
    return int(payload["seq"]), int(payload["t"])


class Receiver(asyncio.Protocol):
    """What every raw client counts: in-order payloads and their latency, into a Tally.

    ``ready`` resolves once the stream has begun: at its ``retry:`` field (the gateway's
    first bytes), or with ``ready_on_headers`` at a 200 answer (nchan sends no retry)."""

    def __init__(self, request: bytes, tally: Tally, ready_on_headers: bool = False) -> None:
        self.request = request
        self.tally = tally
        self.ready_on_headers = ready_on_headers
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.raw = bytearray()  # bytes not yet through the framing
        self.headers_done = False
        self.next_seq = 0
        self.lost = False
        self.ended = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before the stream began: {exc}"))

    def head(self, status: str) -> dict[str, str] | None:
        """The answer's header fields once complete (None before), checking its status."""
        end = self.raw.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(self.raw[:end]).decode("latin-1").split("\r\n")
        del self.raw[: end + 4]
        line = head[0].split(" ", 2)
        if len(line) < 2 or line[1] != status:
            self.ready.set_exception(ConnectionError(f"HTTP answer {head[0]!r}"))
            assert self.transport is not None
            self.transport.close()
            return None
        self.headers_done = True
        if self.ready_on_headers:
            self.ready.set_result(None)
        return {
            k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])
        }

    def record(self, payloads: list[bytes], now: int) -> None:
        latencies: list[int] = []
        next_seq = self.next_seq
        warm = disorder = 0
        for data in payloads:
            seq, published = stamp(data)
            if seq < 0:
                warm += 1
                continue
            if seq != next_seq:
                disorder += 1
            next_seq = seq + 1
            latencies.append((now - published) // 1000)
        self.next_seq = next_seq
        tally = self.tally
        if warm:
            tally.warm += warm
            if tally.warm >= tally.warm_target:
                tally.warmed.set()
        if latencies:
            tally.out_of_order += disorder
            tally.latencies_us.extend(latencies)
            tally.deliveries += len(latencies)
            if tally.deliveries >= tally.expected:
                tally.done.set()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class SSEClient(Receiver):
    """One raw HTTP/1.1 SSE connection: status line, headers, chunked body, events."""

    def __init__(self, request: bytes, tally: Tally, ready_on_headers: bool = False) -> None:
        super().__init__(request, tally, ready_on_headers)
        self.chunked = False
        self.chunk_left = 0  # data bytes left in the current chunk
        self.skip = 0  # CRLF bytes left after a chunk
        self.text = b""  # body bytes not yet split into events

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        self.raw += data
        if not self.headers_done and not self._headers():
            return
        body = self._dechunk() if self.chunked else self._take_all()
        if body:
            self._events(body, now)

    # HTTP framing
    def _headers(self) -> bool:
        fields = self.head("200")
        if fields is None:
            return False
        self.chunked = "chunked" in fields.get("transfer-encoding", "").lower()
        return True

    def _take_all(self) -> bytes:
        body = bytes(self.raw)
        self.raw.clear()
        return body

    def _dechunk(self) -> bytes:
        raw = self.raw
        out: list[bytes] = []
        pos = 0
        size = len(raw)
        while pos < size:
            if self.skip:
                n = min(self.skip, size - pos)
                pos += n
                self.skip -= n
            elif self.chunk_left:
                n = min(self.chunk_left, size - pos)
                out.append(bytes(raw[pos : pos + n]))
                pos += n
                self.chunk_left -= n
                if not self.chunk_left:
                    self.skip = 2
            else:
                end = raw.find(b"\r\n", pos)
                if end < 0:
                    break
                length = int(bytes(raw[pos:end]).split(b";", 1)[0], 16)
                pos = end + 2
                if length == 0:
                    self.ended = True
                    break
                self.chunk_left = length
                self.tally.writes += 1  # one HTTP chunk per server write (ASGI send)
        del raw[:pos]
        return b"".join(out)

    # event stream (the server writes LF line ends; blocks end with an empty line)
    def _events(self, body: bytes, now: int) -> None:
        blocks = (self.text + body if self.text else body).split(b"\n\n")
        self.text = blocks.pop()  # an event is complete only at its empty line
        payloads: list[bytes] = []
        for block in blocks:
            eol = block.find(b"\n")
            if (
                block.startswith(b"id: ")
                and block.startswith(b"data: ", eol + 1)
                and block.find(b"\n", eol + 1) < 0
            ):
                data: bytes | None = block[eol + 7 :]  # the usual shape: one id, one data line
            else:
                data = self._data(block)
            if data is not None:
                payloads.append(data)
        self.record(payloads, now)

    def _data(self, block: bytes) -> bytes | None:
        """Any other block (WHATWG field parsing): data lines joined, comments skipped."""
        data: bytes | None = None
        for line in block.split(b"\n"):
            field, colon, value = line.partition(b":")
            if colon and value[:1] == b" ":
                value = value[1:]
            if field == b"data":
                data = value if data is None else data + b"\n" + value
            elif field == b"retry" and not self.ready.done():
                self.ready.set_result(None)
        return data


def sse_request(port: int, path: str, token: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()


async def open_client(
    port: int, request: bytes, tally: Tally, kind: type[Receiver] = SSEClient, **options: Any
) -> Receiver:
    """One connected client; its ``ready`` resolves once the stream has begun."""
    client = kind(request, tally, **options)
    await asyncio.get_running_loop().create_connection(lambda: client, "127.0.0.1", port)
    return client


async def open_clients(
    port: int,
    request: bytes,
    count: int,
    tally: Tally,
    clients: list[Receiver],
    *,
    kind: type[Receiver] = SSEClient,
    at_once: int = 64,
    **options: Any,
) -> None:
    """``count`` clients sharing ``tally``, ``at_once`` connecting at a time, each appended
    to ``clients`` as soon as it is connected (so that a failure still closes it)."""
    gate = asyncio.Semaphore(at_once)

    async def one() -> None:
        async with gate:
            client = await open_client(port, request, tally, kind, **options)
            clients.append(client)
            await client.ready

    # One deadline for all (a timer per client costs the client core during a storm).
    async with asyncio.timeout(60 + count / 100):
        await asyncio.gather(*(one() for _ in range(count)))


def close_all(clients: list[Receiver]) -> int:
    """Close every client; how many had been cut (closed or ended by the server)."""
    cut = sum(1 for c in clients if c.lost or c.ended)
    for client in clients:
        client.close()
    return cut
