"""Bounds at the edge (CONTRACT §4c, issue 12 D2, D3): header timeout, header size (431),
body size (413 before reading, on every route, authenticated or not), and the open-file
limit raised at start, so idle sockets cannot lock out /healthz or the token endpoint.

Raw sockets against a real gateway process, started with a soft limit of 1,024 open
files (its hard limit is higher) as a host with default limits would give it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.e2e.helpers import HTTP_TIMEOUT, fetch_token, sse_stream
from tests.e2e.servers import MAIN_SECRET, Server, main_config, running_server

HEADER_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def edge_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("edge-server")
    config = main_config(directory)
    config["gateway"]["limits"] = {"header_timeout": f"{HEADER_TIMEOUT}s"}
    low_soft_limit = [
        "sh",
        "-c",
        'ulimit -Sn 1024 && exec "$0" -m gateway.cli serve "$@"',
        sys.executable,
    ]
    with running_server(directory, config, command=low_soft_limit) as running:
        yield running


@contextlib.asynccontextmanager
async def raw(server: Server) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def closed_after(reader: asyncio.StreamReader, deadline: float) -> float:
    """Seconds until the server closes the connection (reads until EOF)."""
    started = time.monotonic()
    async with asyncio.timeout(deadline):
        with contextlib.suppress(ConnectionResetError):
            while await reader.read(65536):
                pass
    return time.monotonic() - started


async def test_a_connection_that_never_completes_its_headers_is_closed(edge_server: Server) -> None:
    async with raw(edge_server) as (silent, _):
        async with raw(edge_server) as (reader, writer):
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            await writer.drain()
            assert await closed_after(reader, HEADER_TIMEOUT + 4) >= HEADER_TIMEOUT * 0.9
        assert await closed_after(silent, HEADER_TIMEOUT + 4) < HEADER_TIMEOUT + 4


async def test_headers_over_the_limit_get_431_and_the_connection_closes(
    edge_server: Server,
) -> None:
    async with raw(edge_server) as (reader, writer):
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"application/problem+json" in answer


async def cut_while_sending(server: Server, head: bytes, piece: bytes, pieces: int) -> bool:
    """Whether the server closes the connection before ``pieces`` pieces are sent."""
    async with raw(server) as (_, writer):
        try:
            writer.write(head)
            for _ in range(pieces):
                writer.write(piece)
                await asyncio.wait_for(writer.drain(), 10)
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


async def test_a_64_mib_header_is_not_read(edge_server: Server) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "
    assert await cut_while_sending(edge_server, head, b"a" * 65536, 1024)
    await assert_healthy(edge_server)


async def assert_healthy(server: Server) -> None:
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
        assert (await client.get(f"{server.base_url}/healthz")).status_code == 200


@pytest.mark.parametrize("path", ["/api/v1/apis", "/oauth2/token", "/events/1.0.0/t/x"])
async def test_a_declared_big_body_gets_413_before_it_is_sent(
    edge_server: Server, path: str
) -> None:
    async with raw(edge_server) as (reader, writer):
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: 250000000\r\n\r\n{{".encode()
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)  # closed after the answer
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b"application/problem+json" in answer


async def test_a_chunked_big_body_is_cut_once_it_passes_the_limit(edge_server: Server) -> None:
    head = (
        b"POST /api/v1/apis HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"10000\r\n" + b"x" * 65536 + b"\r\n"  # 64 KiB; the limit is 1 MiB
    assert await cut_while_sending(edge_server, head, chunk, 4096)  # 256 MiB if it were read
    await assert_healthy(edge_server)


async def test_1100_idle_sockets_leave_healthz_tokens_and_streams_answering(
    edge_server: Server,
) -> None:
    token = await fetch_token(edge_server.base_url, "main", MAIN_SECRET)
    async with sse_stream(edge_server.base_url, "/events/1.0.0/t/idle", token) as stream:
        idle = [await asyncio.open_connection("127.0.0.1", edge_server.port) for _ in range(1100)]
        try:
            async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
                health = await client.get(f"{edge_server.base_url}/healthz")
                assert health.status_code == 200
            assert await fetch_token(edge_server.base_url, "main", MAIN_SECRET)
            assert await stream.next_block(5) is not None  # a heartbeat at least
        finally:
            for _, writer in idle:
                writer.close()
