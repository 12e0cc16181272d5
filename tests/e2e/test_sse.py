"""CONTRACT §5 Server-Sent Events, and §3 multi-topic and path-parameter URLs."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest

from bridge.wire.sse import ParsedEvent, decode_stream
from tests.e2e.helpers import (
    assert_problem,
    eventually,
    fetch_token,
    get,
    metric,
    metrics_text,
    payloads,
    publisher,
    room,
    sse_stream,
)
from tests.e2e.servers import MAIN_SECRET, SLOW_SECRET, Server


def feed(ns: str, r: str) -> str:
    return f"/feed/1.0.0/in/{ns}/{r}"


async def test_stream_framing_retry_once_and_ids(server: Server, token: str) -> None:
    r = room()
    async with (
        sse_stream(server.base_url, f"/events/1.0.0/t/{r}", token) as stream,
        publisher(server.ws_url, feed("e2e", r), token) as pub,
    ):
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        await pub.send_all([{"n": n} for n in range(3)])
        events = await stream.events(3)
        await pub.send({"n": 3})
        events += await stream.events(1)
    assert payloads(events) == [{"n": n} for n in range(4)]
    assert all(e.id for e in events), "every event carries an id"
    assert len({e.id for e in events}) == 4
    retry_lines = [line for line in stream.raw.splitlines() if line.startswith("retry:")]
    assert len(retry_lines) == 1
    assert stream.raw.startswith("retry:")


async def test_multi_line_payload_is_one_data_line_per_line(server: Server, token: str) -> None:
    r = room()
    text = "first line\nsecond line\nthird line"
    async with (
        sse_stream(server.base_url, f"/events/1.0.0/t/{r}", token) as stream,
        publisher(server.ws_url, feed("e2e", r), token) as pub,
    ):
        await pub.send(json.dumps(text))
        event = await stream.next_event()
    assert event is not None and event.id
    assert event.data == text
    data_lines = [ln for ln in stream.block_of(event.id).splitlines() if ln.startswith("data:")]
    assert data_lines == ["data: first line", "data: second line", "data: third line"]


@pytest.mark.parametrize("via", ["header", "query"])
async def test_resume_continues_right_after_the_event(server: Server, token: str, via: str) -> None:
    r = room()
    path = f"/events/1.0.0/t/{r}"
    async with publisher(server.ws_url, feed("e2e", r), token) as pub:
        async with sse_stream(server.base_url, path, token) as stream:
            await pub.send_all([{"n": n} for n in range(5)])
            first = await stream.events(5)
        await pub.send({"n": 5})  # published while the client is away
        resume = first[1].id
        assert resume is not None
        headers = {"Last-Event-ID": resume} if via == "header" else None
        params = {"last_event_id": resume} if via == "query" else None
        async with sse_stream(
            server.base_url, path, token, headers=headers, params=params
        ) as again:
            replayed = await again.events(4)
            await pub.send({"n": 6})
            live = await again.events(1)
    assert payloads(first) == [{"n": n} for n in range(5)]
    assert payloads(replayed + live) == [{"n": n} for n in range(2, 7)]
    assert [e.id for e in replayed[:3]] == [e.id for e in first[2:]]
    assert all(e.event is None for e in replayed), "no gap: the resume point is retained"


async def test_resume_older_than_replay_buffer_starts_with_gap(server: Server, token: str) -> None:
    r = room()
    path = f"/short/1.0.0/t/{r}"  # replay: {max_events: 3}
    async with publisher(server.ws_url, feed("short", r), token) as pub:
        async with sse_stream(server.base_url, path, token) as stream:
            await pub.send_all([{"n": n} for n in range(6)])
            first = await stream.events(6)
        ids = [e.id for e in first]
        async with sse_stream(
            server.base_url, path, token, headers={"Last-Event-ID": ids[0] or ""}
        ) as again:
            gap = await again.next_event()
            retained = await again.events(3)
            await pub.send({"n": 6})
            live = await again.events(1)
    assert gap is not None and gap.event == "gap"
    assert json.loads(gap.data) == {"requested": ids[0], "oldest": ids[3]}
    assert [e.id for e in retained] == ids[3:]
    assert payloads(retained + live) == [{"n": n} for n in range(3, 7)]


async def test_heartbeat_comment_on_idle_stream(server: Server, token: str) -> None:
    # gateway.heartbeat: 1s in this config
    async with sse_stream(server.base_url, f"/events/1.0.0/t/{room()}", token) as stream:
        assert await stream.next_block() == "retry: 3000"
        opening = await stream.next_block()
        started = time.monotonic()
        later = await stream.next_block(timeout=3.0)
        assert later == ": ping", f"got {later!r} after {opening!r}"
        assert time.monotonic() - started < 3.0


async def test_multi_topic_stream_names_each_event(server: Server, token: str) -> None:
    r = room()
    topics = [("topic", f"/t/{r}"), ("topic", f"/other/{r}")]
    async with (
        sse_stream(server.base_url, "/events/1.0.0", token, params=topics) as stream,
        publisher(server.ws_url, feed("e2e", r), token) as to_t,
        publisher(server.ws_url, feed("other", r), token) as to_other,
    ):
        await to_t.send({"from": "t"})
        first = await stream.next_event()
        await to_other.send({"from": "other"})
        second = await stream.next_event()
    assert first is not None and second is not None
    assert (first.event, json.loads(first.data)) == (f"/t/{r}", {"from": "t"})
    assert (second.event, json.loads(second.data)) == (f"/other/{r}", {"from": "other"})
    assert first.id and second.id


@pytest.mark.parametrize("scope", ["events:read", "other:read"])
async def test_multi_topic_needs_every_topics_scope(server: Server, scope: str) -> None:
    narrow = await fetch_token(server.base_url, "main", MAIN_SECRET, scope=scope)
    r = room()
    topics = [("topic", f"/t/{r}"), ("topic", f"/other/{r}")]
    response = await get(server.base_url, "/events/1.0.0", narrow, params=topics)
    assert assert_problem(response, 403)["code"] == "insufficient_scope"


async def test_path_parameters_select_the_channel(server: Server, token: str) -> None:
    r = room()
    eu, us = f"eu{r}", f"us{r}"
    async with (
        sse_stream(server.base_url, f"/events/1.0.0/by-region/{eu}", token) as eu_stream,
        sse_stream(server.base_url, f"/events/1.0.0/by-region/{us}", token) as us_stream,
        publisher(server.ws_url, feed("orders", eu), token) as to_eu,
        publisher(server.ws_url, feed("orders", us), token) as to_us,
    ):
        await to_us.send({"region": "us", "n": 1})
        await to_eu.send({"region": "eu", "n": 1})
        await to_us.send({"region": "us", "n": 2})
        await to_eu.send({"region": "eu", "n": 2})
        eu_events = await eu_stream.events(2)
        us_events = await us_stream.events(2)
    assert payloads(eu_events) == [{"region": "eu", "n": 1}, {"region": "eu", "n": 2}]
    assert payloads(us_events) == [{"region": "us", "n": 1}, {"region": "us", "n": 2}]


# --- slow clients ------------------------------------------------------------------------


class RawStream:
    """An SSE request on a bare socket with a tiny receive buffer, read only on demand."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.received = b""

    @classmethod
    async def open(cls, server: Server, path: str, token: str) -> RawStream:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", server.port))
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
        )
        await loop.sock_sendall(sock, request.encode())
        return cls(sock)

    async def read_until(self, marker: bytes, timeout: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            while marker not in self.received:
                chunk = await loop.sock_recv(self.sock, 65536)
                assert chunk, "connection closed early"
                self.received += chunk

    async def read_to_end(self, timeout: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            while chunk := await loop.sock_recv(self.sock, 1 << 20):
                self.received += chunk

    def events(self) -> list[ParsedEvent]:
        head, _, body = self.received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        if b"transfer-encoding: chunked" in head.lower():
            body = dechunk(body)
        return decode_stream(body.decode("utf-8", errors="replace"))


def dechunk(body: bytes) -> bytes:
    """HTTP/1.1 chunked body; a cut at the end leaves the complete part."""
    out = b""
    while body:
        size_line, sep, rest = body.partition(b"\r\n")
        if not sep:
            break
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return out


async def test_slow_client_is_disconnected_and_resumes(slow_server: Server) -> None:
    server = slow_server
    token = await fetch_token(server.base_url, "s", SLOW_SECRET)
    r = room()
    path = f"/slow/1.0.0/t/{r}"
    total = 120
    pad = "x" * 60_000  # 7 MB in all: more than the kernel and transport buffers hold
    before = await metrics_text(server.base_url)
    false_alarm = "returned without completing response"
    alarms = server.stderr().count(false_alarm)
    slow = await RawStream.open(server, path, token)
    try:
        await slow.read_until(b": ping")  # attached; from here on it reads nothing
        async with (
            sse_stream(server.base_url, path, token) as normal,
            publisher(server.ws_url, f"/slow-feed/1.0.0/in/{r}", token) as pub,
        ):
            received = []
            for n in range(total):  # paced by the normal client, which keeps up
                await pub.send({"n": n, "pad": pad})
                received += await normal.events(1)
        assert [p["n"] for p in payloads(received)] == list(range(total))

        async def cut() -> bool:
            text = await metrics_text(server.base_url)
            sample = "streambridge_slow_client_disconnects_total"
            return (
                metric(text, sample, protocol="sse") >= metric(before, sample, protocol="sse") + 1
            )

        await eventually(cut, what="the slow client's disconnection")
        await slow.read_to_end()
        # A deliberate cut is counted in /metrics, not logged as a server error.
        assert server.stderr().count(false_alarm) == alarms
    finally:
        slow.sock.close()
    got = [e for e in slow.events() if e.event != "lag"]  # lag: no id (CONTRACT §10)
    ids = [e.id for e in received]
    assert 0 < len(got) < total
    assert [e.id for e in got] == ids[: len(got)], "what it got is a prefix, nothing skipped"
    async with sse_stream(
        server.base_url, path, token, headers={"Last-Event-ID": got[-1].id or ""}
    ) as resumed:
        rest: list[ParsedEvent] = []
        while len(rest) < total - len(got):  # a resumed backlog may be lag, too
            rest += [e for e in await resumed.events(1) if e.event != "lag"]
    assert [e.id for e in rest] == ids[len(got) :]
