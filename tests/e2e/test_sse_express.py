"""SSE GETs admitted in the server protocol's own callback (gateway/sse_express.py) answer
byte for byte as the ASGI path does, and whatever that path does not take (refusals, a
resume, ``from``, a body, a lease) is answered by the ASGI path as before.

A GET with ``Content-Length: 0`` asks for the same thing but takes the ASGI path (a body
header), so each request is sent both ways and the answers are compared, apart from the
``date`` header.
"""

from __future__ import annotations

import asyncio
import socket

from tests.e2e.helpers import TIMEOUT, fetch_token, metric, metrics_text, publisher, room
from tests.e2e.servers import MAIN_SECRET, SECRETS, Server

ASGI = "Content-Length: 0\r\n"  # the same request, on the ASGI path
EXPRESS = "streambridge_streams_express_total"


async def connect_raw(
    server: Server, path: str, headers: str, method: str = "GET"
) -> socket.socket:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", server.port))
    request = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n{headers}\r\n"
    await loop.sock_sendall(sock, request.encode())
    return sock


async def read_until(sock: socket.socket, received: bytes, done: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(TIMEOUT):
        while done not in received:
            chunk = await loop.sock_recv(sock, 65536)
            assert chunk, f"closed before {done!r}: {received!r}"
            received += chunk
    return received


async def _answer(server: Server, path: str, headers: str, method: str = "GET") -> bytes:
    """A whole non-streaming answer (head and its Content-Length of body)."""
    sock = await connect_raw(server, path, headers, method)
    try:
        received = await read_until(sock, b"", b"\r\n\r\n")
        head, _, body = received.partition(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        while len(body) < length:
            chunk = await asyncio.get_running_loop().sock_recv(sock, 65536)
            assert chunk, "closed in the body"
            body += chunk
        return head + b"\r\n\r\n" + body
    finally:
        sock.close()


def undated(raw: bytes) -> bytes:
    head, sep, body = raw.partition(b"\r\n\r\n")
    lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"date:")]
    return b"\r\n".join(lines) + sep + body


async def test_a_live_stream_begins_and_delivers_byte_for_byte_as_on_the_asgi_path(
    server: Server,
) -> None:
    token = await fetch_token(server.base_url, "main", MAIN_SECRET)
    r = room()
    path = f"/events/1.0.0/t/{r}"
    headers = f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n"
    counted = metric(await metrics_text(server.base_url), EXPRESS)
    express = await connect_raw(server, path, headers)
    asgi = await connect_raw(server, path, headers + ASGI)
    try:
        begun = [await read_until(sock, b"", b": ping\n\n") for sock in (express, asgi)]
        # The first took the express path, the second the ASGI path.
        assert metric(await metrics_text(server.base_url), EXPRESS) == counted + 1
        assert begun[0].startswith(b"HTTP/1.1 200 OK\r\n")
        assert undated(begun[0]) == undated(begun[1])
        events = [{"n": n, "text": "ünïcode"} for n in range(3)]
        async with publisher(server.ws_url, f"/feed/1.0.0/in/e2e/{r}", token) as pub:
            await pub.send_all(events)
        streams = [await read_until(sock, b"", b'"n":2,') for sock in (express, asgi)]
        # Heartbeats fall at each stream's own time: compare the events' chunks only.
        frames = [
            [part for part in stream.split(b"\r\n") if part.startswith(b"id:")]
            for stream in streams
        ]
        assert len(frames[0]) == 3
        assert frames[0] == frames[1]
    finally:
        express.close()
        asgi.close()


async def test_what_the_express_path_leaves_is_answered_as_on_the_asgi_path(
    server: Server,
) -> None:
    main = await fetch_token(server.base_url, "main", MAIN_SECRET)
    blocked = await fetch_token(server.base_url, "blocked", SECRETS["blocked"])
    nosub = await fetch_token(server.base_url, "nosub", SECRETS["nosub"])
    r = room()
    cases: list[tuple[str, str, int | None]] = [
        (f"/events/1.0.0/t/{r}", "", 401),  # no token
        (f"/events/1.0.0/t/{r}", "Authorization: Bearer a.b.c\r\n", 401),
        (f"/events/1.0.0/nowhere/{r}", f"Authorization: Bearer {main}\r\n", 404),
        (f"/nothing/1.0.0/t/{r}", f"Authorization: Bearer {main}\r\n", 404),
        (f"/events/1.0.0/t/{r}", f"Authorization: Bearer {blocked}\r\n", 403),
        (f"/feed/1.0.0/watch/{r}", f"Authorization: Bearer {nosub}\r\n", None),
        (f"/events/1.0.0/t/{r}?from=never", f"Authorization: Bearer {main}\r\n", 400),
        (f"/events/1.0.0/t/{r}?filter=(", f"Authorization: Bearer {main}\r\n", 400),
    ]
    counted = metric(await metrics_text(server.base_url), EXPRESS)
    for path, headers, status in cases:
        express = await _answer(server, path, headers)
        asgi = await _answer(server, path, headers + ASGI)
        if status is not None:
            assert express.startswith(f"HTTP/1.1 {status} ".encode()), (path, express[:200])
        assert undated(express) == undated(asgi), path
    assert metric(await metrics_text(server.base_url), EXPRESS) == counted, (
        "none of these is served by the express path"
    )


async def test_a_connection_over_the_tier_limit_gets_the_asgi_paths_429(server: Server) -> None:
    token = await fetch_token(server.base_url, "single", SECRETS["single"])
    r = room()
    path = f"/events/1.0.0/t/{r}"
    headers = f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n"
    first = await connect_raw(server, path, headers)
    try:
        await read_until(first, b"", b": ping\n\n")
        express = await _answer(server, path, headers)
        asgi = await _answer(server, path, headers + ASGI)
    finally:
        first.close()
    assert express.startswith(b"HTTP/1.1 429 ")
    assert undated(express) == undated(asgi)


async def test_a_request_pipelined_behind_a_stream_is_dropped_on_both_paths(
    server: Server,
) -> None:
    """A stream holds its connection: what was sent behind its GET in the same packet is
    not answered, whichever path admitted the stream."""
    token = await fetch_token(server.base_url, "main", MAIN_SECRET)
    path = f"/events/1.0.0/t/{room()}"
    headers = f"Authorization: Bearer {token}\r\n"
    behind = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n"
    begun = []
    for extra in ("", ASGI):
        sock = await connect_raw(server, path, headers + extra + "\r\n" + behind[:-2])
        try:
            begun.append(await read_until(sock, b"", b": ping\n\n"))
        finally:
            sock.close()
    assert undated(begun[0]) == undated(begun[1])
    assert begun[0].count(b"HTTP/1.1 ") == 1
