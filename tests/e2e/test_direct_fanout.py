"""The direct-write fan-out path (issue 14): the hub writes each event's bytes, encoded
once, to every ready client's socket; a paused socket falls back to the client's bounded
queue, which still cuts a client that stopped reading (CONTRACT §5)."""

from __future__ import annotations

import asyncio
import json
import resource
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.frames import Close, Frame, Opcode

from tests.e2e.helpers import (
    TIMEOUT,
    eventually,
    fetch_token,
    frames_until_closed,
    metric,
    metrics_text,
    payloads,
    publisher,
    room,
    sse_stream,
    ws_connect,
)
from tests.e2e.servers import (
    MAIN_SECRET,
    SECRETS,
    SLOW_SECRET,
    Server,
    main_config,
    running_server,
)
from tests.e2e.test_sse import RawStream, dechunk

THOUSAND = 1000


async def test_a_client_that_stops_reading_is_cut_with_its_last_id_while_others_keep_up(
    slow_server: Server,
) -> None:
    server = slow_server
    token = await fetch_token(server.base_url, "s", SLOW_SECRET)
    r = room()
    path = f"/slow/1.0.0/t/{r}"
    total, pad = 60, "x" * 100_000  # 6 MB: more than the socket buffers hold
    sample = "streambridge_slow_client_disconnects_total"
    before = metric(await metrics_text(server.base_url), sample, protocol="sse")
    stuck = await RawStream.open(server, path, token)
    try:
        await stuck.read_until(b": ping")  # attached; from here on it reads nothing
        async with (
            sse_stream(server.base_url, path, token) as one,
            sse_stream(server.base_url, path, token) as two,
            publisher(server.ws_url, f"/slow-feed/1.0.0/in/{r}", token) as pub,
        ):
            lags, received = [], []
            for n in range(total):
                sent = time.monotonic()
                await pub.send({"n": n, "pad": pad})
                got = await one.events(1)
                received += got
                await two.events(1)
                lags.append(time.monotonic() - sent)
        assert [p["n"] for p in payloads(received)] == list(range(total))
        # The stuck client never holds the others back: no event waits for its socket.
        assert sorted(lags)[len(lags) // 2] < 1.0, f"median {sorted(lags)[len(lags) // 2]:.2f}s"

        async def cut() -> bool:
            text = await metrics_text(server.base_url)
            return metric(text, sample, protocol="sse") >= before + 1

        await eventually(cut, what="the stuck client's disconnection")
        await stuck.read_to_end()
    finally:
        stuck.sock.close()
    got = [e for e in stuck.events() if e.event != "lag"]
    assert 0 < len(got) < total
    ids = [e.id for e in received]
    assert [e.id for e in got] == ids[: len(got)], "a prefix: its last id is where it resumes"
    async with sse_stream(
        server.base_url, path, token, headers={"Last-Event-ID": got[-1].id or ""}
    ) as resumed:
        rest = []
        while len(rest) < total - len(got):
            rest += [e for e in await resumed.events(1) if e.event != "lag"]
    assert [e.id for e in rest] == ids[len(got) :]


async def test_a_paused_socket_resumes_without_loss(slow_server: Server) -> None:
    """Six events of 500 kB fill the socket and the transport's buffer (it pauses) but
    not the queue (client_queue: 8): once the client reads again it gets all, in order."""
    server = slow_server
    token = await fetch_token(server.base_url, "s", SLOW_SECRET)
    r = room()
    path = f"/slow/1.0.0/t/{r}"
    total, pad = 6, "y" * 500_000
    paused = await RawStream.open(server, path, token)
    try:
        await paused.read_until(b": ping")
        async with (
            sse_stream(server.base_url, path, token) as pacer,
            publisher(server.ws_url, f"/slow-feed/1.0.0/in/{r}", token) as pub,
        ):
            for n in range(total):
                await pub.send({"n": n, "pad": pad})
            live = await pacer.events(total)
            await pub.send({"n": total, "pad": ""})  # written straight away once resumed
            live += await pacer.events(1)
            await paused.read_until(f'"n":{total},'.encode(), timeout=20.0)
    finally:
        paused.sock.close()
    got = [e for e in paused.events() if e.event != "lag"]
    assert [e.id for e in got] == [e.id for e in live]
    assert [p["n"] for p in payloads(got)] == list(range(total + 1))


async def _raw_subscriber(
    port: int, request: bytes, head_end: bytes
) -> tuple[socket.socket, bytes]:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, request)
    received = b""
    while head_end not in received:
        chunk = await loop.sock_recv(sock, 65536)
        assert chunk, "closed before the stream began"
        received += chunk
    return sock, received


def _ws_upgrade(port: int, token: str, path: str) -> str:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )


def _data_frames(stream: bytes) -> tuple[bytes, ...]:
    """The server's unmasked frames (RFC 6455 §5.2) in ``stream`` but its pings (heartbeats
    differ between clients, as SSE pings do)."""
    frames, pos = [], 0
    while pos < len(stream):
        length, head = stream[pos + 1] & 0x7F, pos + 2
        if length == 126:
            length, head = int.from_bytes(stream[head : head + 2]), head + 2
        frame, pos = stream[pos : head + length], head + length
        if frame[0] & 0x0F != 0x9:
            frames.append(frame)
    return tuple(frames)


async def test_a_thousand_clients_get_byte_identical_frames(server: Server) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4 * THOUSAND:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8 * THOUSAND), hard))
    token = await fetch_token(server.base_url, "main", MAIN_SECRET)
    r = room()
    host = f"Host: 127.0.0.1:{server.port}\r\nAuthorization: Bearer {token}\r\n"
    sse = f"GET /events/1.0.0/t/{r} HTTP/1.1\r\n{host}Accept: text/event-stream\r\n\r\n"
    ws = _ws_upgrade(server.port, token, f"/feed/1.0.0/watch/{r}")
    gate = asyncio.Semaphore(100)

    async def one(request: str, head_end: bytes) -> tuple[socket.socket, bytes]:
        async with gate:
            return await _raw_subscriber(server.port, request.encode(), head_end)

    opened = await asyncio.gather(
        *(one(sse, b"retry:") for _ in range(THOUSAND)),
        *(one(ws, b"\r\n\r\n") for _ in range(THOUSAND)),
        return_exceptions=True,
    )
    sockets = [item[0] for item in opened if isinstance(item, tuple)]
    try:
        assert len(sockets) == 2 * THOUSAND, [e for e in opened if not isinstance(e, tuple)][:3]
        events = [{"n": n, "text": "frame ünïcode"} for n in range(3)]
        async with publisher(server.ws_url, f"/feed/1.0.0/in/e2e/{r}", token) as pub:
            await pub.send_all(events)
        marker = b'"n":2,'
        loop = asyncio.get_running_loop()

        async def drain(item: tuple[socket.socket, bytes]) -> bytes:
            sock, received = item
            async with asyncio.timeout(30):
                while marker not in received:
                    chunk = await loop.sock_recv(sock, 65536)
                    assert chunk, "closed early"
                    received += chunk
            return received

        bodies = await asyncio.gather(*(drain(item) for item in opened if isinstance(item, tuple)))
    finally:
        for sock in sockets:
            sock.close()
    sse_frames = set()
    for body in bodies[:THOUSAND]:
        stream = dechunk(body.partition(b"\r\n\r\n")[2])
        blocks = [b for b in stream.split(b"\n\n") if b.startswith(b"id:")]  # pings differ
        sse_frames.add(tuple(blocks))
    ws_frames = {_data_frames(body.partition(b"\r\n\r\n")[2]) for body in bodies[THOUSAND:]}
    assert len(sse_frames) == 1 and len(next(iter(sse_frames))) == 3
    assert len(ws_frames) == 1, "every WebSocket client got the very same frame bytes"
    frames = next(iter(ws_frames))
    assert len(frames) == 3 and all(f.startswith(b"\x81") for f in frames)  # FIN + text, unmasked


async def test_a_held_websocket_pings_publishes_fragments_and_closes_cleanly(
    server: Server,
) -> None:
    """An accepted WebSocket is held without a task (gateway/websocket_holder.py): it
    gets heartbeat pings (gateway.heartbeat: 1s), a message sent in fragments is published
    whole, and a client's close frame is echoed before the connection ends."""
    token = await fetch_token(server.base_url, "main", MAIN_SECRET)
    r = room()
    request = _ws_upgrade(server.port, token, f"/feed/1.0.0/chat/{r}")
    sock, received = await _raw_subscriber(server.port, request.encode(), b"\r\n\r\n")
    loop = asyncio.get_running_loop()

    async def until(wanted: bytes) -> bytes:
        nonlocal received
        async with asyncio.timeout(TIMEOUT):
            while wanted not in received:
                chunk = await loop.sock_recv(sock, 65536)
                assert chunk, "closed early"
                received += chunk
        return received

    try:
        await until(b"\x89\x00")  # an RFC 6455 ping, no payload
        parts = [b'{"part": ', b'"one", ', b'"whole": true}']
        fragments = [
            Frame(Opcode.TEXT if i == 0 else Opcode.CONT, part, fin=i == len(parts) - 1)
            for i, part in enumerate(parts)
        ]
        await loop.sock_sendall(sock, b"".join(f.serialize(mask=True) for f in fragments))
        await until(b'"whole":true}')  # a both topic: the publisher gets it too
        close = Frame(Opcode.CLOSE, Close(1000, "bye").serialize())
        await loop.sock_sendall(sock, close.serialize(mask=True))
        async with asyncio.timeout(TIMEOUT):
            while chunk := await loop.sock_recv(sock, 65536):
                received += chunk
    finally:
        sock.close()
    assert received.endswith(close.serialize(mask=False)), "the close frame echoed, then EOF"
    text = b"".join(_data_frames(received.partition(b"\r\n\r\n")[2]))
    assert text.count(b'"whole":true}') == 1


@pytest.fixture(scope="module", params=[True, False], ids=["tcp_nodelay", "nagle"])
def own_server(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Server]:
    """A gateway of this module's own: fresh tier windows, a 2 s WebSocket ping timeout;
    once as by default, once with ``gateway.tcp_nodelay: false`` (Nagle's algorithm on the
    streams' sockets while they stream, TCP_NODELAY again once they end)."""
    directory = tmp_path_factory.mktemp("own")
    config = main_config(directory)
    config["gateway"]["ping_timeout"] = "2s"
    config["gateway"]["tcp_nodelay"] = request.param
    with running_server(directory, config) as server:
        yield server


async def test_a_held_websocket_whose_peer_is_gone_is_closed_and_live_ones_stay(
    own_server: Server,
) -> None:
    """A held WebSocket whose pings have had no answer for ``gateway.ping_timeout`` (2 s
    here, heartbeats every 1 s) is closed with 1011, as websockets' keepalive closes a
    task-held one; a client that answers its pings (websockets does) keeps its stream."""
    server = own_server
    token = await fetch_token(server.base_url, "main", MAIN_SECRET)
    r = room()
    request = _ws_upgrade(server.port, token, f"/feed/1.0.0/watch/{r}")
    loop = asyncio.get_running_loop()
    async with ws_connect(server.ws_url, f"/feed/1.0.0/watch/{r}", token) as live:
        sock, received = await _raw_subscriber(server.port, request.encode(), b"\r\n\r\n")
        try:
            async with asyncio.timeout(TIMEOUT + 2):  # answers nothing: closed after ~2-3 s
                while chunk := await loop.sock_recv(sock, 65536):
                    received += chunk
        finally:
            sock.close()
        frames = _data_frames(received.partition(b"\r\n\r\n")[2])
        closing = Frame(Opcode.CLOSE, Close(1011, "keepalive ping timeout").serialize())
        assert frames[-1:] == (closing.serialize(mask=False),)
        async with publisher(server.ws_url, f"/feed/1.0.0/in/e2e/{r}", token) as pub:
            await pub.send_all([{"n": 1}])
        async with asyncio.timeout(TIMEOUT):
            assert json.loads(await live.recv()) == {"n": 1}


async def test_a_held_stream_ends_with_its_last_words_and_its_connection_serves_on(
    own_server: Server,
) -> None:
    """An idle SSE stream is held without a task of its own (gateway/sse_holder.py):
    its writer starts when the window is spent, writes the last words and the final
    chunk, and the keep-alive connection then answers the next request."""
    server = own_server
    trickle = await fetch_token(server.base_url, "trickle-sse", SECRETS["trickle-sse"])
    main = await fetch_token(server.base_url, "main", MAIN_SECRET)
    r = room()
    stream = await RawStream.open(server, f"/events/1.0.0/t/{r}", trickle)
    try:
        await stream.read_until(b": ping")
        async with publisher(server.ws_url, f"/feed/1.0.0/in/e2e/{r}", main) as pub:
            await pub.send_all([{"n": n} for n in range(4)])  # Trickle: 3 a minute
        await stream.read_until(b"\r\n0\r\n\r\n")  # the final chunk, not a hang-up
        events = stream.events()
        assert [e.event for e in events] == [None, None, None, "throttled"]
        assert [payloads([e])[0]["n"] for e in events[:3]] == [0, 1, 2]
        loop = asyncio.get_running_loop()
        stream.received = b""
        await loop.sock_sendall(stream.sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        await stream.read_until(b'"ok"')
        assert stream.received.startswith(b"HTTP/1.1 200")
    finally:
        stream.sock.close()


async def test_held_streams_end_cleanly_when_the_gateway_stops(tmp_path: Path) -> None:
    """SIGTERM: every held stream gets the end of its response (the final chunk; an
    EventSource reconnects elsewhere), a held WebSocket its close frame (1001), and the
    process exits without waiting them out."""
    with running_server(tmp_path, main_config(tmp_path)) as server:
        token = await fetch_token(server.base_url, "main", MAIN_SECRET)
        path = f"/events/1.0.0/t/{room()}"
        streams = [await RawStream.open(server, path, token) for _ in range(3)]
        try:
            async with ws_connect(server.ws_url, f"/feed/1.0.0/watch/{room()}", token) as ws:
                for stream in streams:
                    await stream.read_until(b": ping")
                stopped = time.monotonic()
                server.process.send_signal(signal.SIGTERM)
                for stream in streams:
                    await stream.read_to_end()
                    assert stream.received.endswith(b"\r\n0\r\n\r\n"), stream.received[-40:]
                _, close = await frames_until_closed(ws)
                assert close.code == 1001
            await asyncio.to_thread(server.process.wait, 10)
            assert time.monotonic() - stopped < 5, "the graceful shutdown was waited out"
        finally:
            for stream in streams:
                stream.sock.close()
