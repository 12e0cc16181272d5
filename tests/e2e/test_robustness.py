"""No client input crashes the gateway or stops other clients' streams (issue 2, "Bad input").

A live SSE stream runs through the whole test; hostile requests of every kind are thrown
at the server, each must get a 4xx answer (never 5xx, never a hang), and afterwards the
stream still receives events and /healthz still answers.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import quote

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from tests.e2e.helpers import HTTP_TIMEOUT, fetch_token, publisher, room, sse_stream
from tests.e2e.servers import MAIN_SECRET, Server

PATH_CHARS = st.sampled_from([*"abz09/-_.~%{}+#*?&=;:@!$'()[] \\", "%00", "%2F", "..", "é"])


def _hostile_requests(token: str) -> list[tuple[str, str, dict[str, str], bytes]]:
    auth = {"Authorization": f"Bearer {token}"}
    long = "a" * 8000
    return [
        ("GET", "/events/1.0.0/t/../../etc/passwd", auth, b""),
        ("GET", "/events/1.0.0/t/a.b.c", auth, b""),
        ("GET", "/events/1.0.0/t/%23", auth, b""),
        ("GET", "/events/1.0.0?topic=&topic=/nope", auth, b""),
        ("GET", "/events/1.0.0/t/x", {"Authorization": "Bearer " + long}, b""),
        ("GET", "/events/1.0.0/t/x", {"Authorization": "Basic Zm9vOmJhcg=="}, b""),
        ("GET", "/events/1.0.0/t/x", {"Authorization": "Bearer a.b.c"}, b""),
        ("GET", "/events/1.0.0/t/x?access_token=%FF%FE", {}, b""),
        ("POST", "/events/1.0.0/t/x", auth, b"{}"),
        ("DELETE", "/events/1.0.0/t/x", auth, b""),
        ("POST", "/oauth2/token", {"Content-Type": "application/json"}, b'{"grant_type": 1}'),
        (
            "POST",
            "/oauth2/token",
            {"Content-Type": "application/x-www-form-urlencoded"},
            b"\xff\xfe=\x00&&&===grant_type",
        ),
        (
            "POST",
            "/oauth2/token",
            {
                "Authorization": "Basic !!!notbase64",
                "Content-Type": "application/x-www-form-urlencoded",
            },
            b"grant_type=client_credentials",
        ),
        ("GET", "/api/v1/nothing-here", {}, b""),
        ("GET", "/" + long, auth, b""),
    ]


async def _assert_client_error(
    client: httpx.AsyncClient,
    base: str,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
) -> None:
    async with client.stream(method, base + path, headers=headers, content=body) as response:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return  # an accepted stream (e.g. an odd but valid topic value): fine, not a crash
        await response.aread()
        assert 400 <= response.status_code < 500, (method, path, response.status_code)


async def test_hostile_requests_get_4xx_and_streams_go_on(server: Server) -> None:
    token = await fetch_token(server.base_url, "main", MAIN_SECRET)
    channel = room()
    async with sse_stream(server.base_url, f"/events/1.0.0/t/{channel}", token) as stream:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
            for method, path, headers, body in _hostile_requests(token):
                await _assert_client_error(client, server.base_url, method, path, headers, body)
            # resume ids of every shape
            for bad_id in ["", "x", "-1", "zz-99999999999999999999", "abc-" + "9" * 19, "%C3%A9"]:
                async with client.stream(
                    "GET",
                    f"{server.base_url}/events/1.0.0/t/{room()}",
                    headers={"Authorization": f"Bearer {token}", "Last-Event-ID": bad_id},
                ) as response:
                    assert response.status_code == 200
        # malformed WebSocket traffic
        for frame in [b"\xff\xfe\xfd", "not json", "{" * 500]:
            async with connect(
                f"{server.ws_url}/feed/1.0.0/chat/{room()}?access_token={token}"
            ) as ws:
                await ws.send(frame)
                await ws.ping()
        try:
            async with connect(f"{server.ws_url}/events/1.0.0/t/{room()}") as ws:
                await ws.recv()
        except (InvalidHandshake, ConnectionClosed):
            pass
        async with publisher(server.ws_url, f"/feed/1.0.0/in/e2e/{channel}", token) as pub:
            await pub.send({"still": "alive"})
        event = await stream.next_event()
    assert event is not None and json.loads(event.data) == {"still": "alive"}


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    path=st.lists(PATH_CHARS, max_size=30).map("".join),
    query=st.text(
        st.characters(min_codepoint=0x20, exclude_characters="\x7f", exclude_categories=["Cs"]),
        max_size=40,
    ),
)
def test_random_paths_never_5xx(server: Server, path: str, query: str) -> None:
    if server.port not in TOKENS:  # one token for every example: the probes are the point
        TOKENS[server.port] = asyncio.run(fetch_token(server.base_url, "main", MAIN_SECRET))
    asyncio.run(_probe(server, TOKENS[server.port], path, query))


TOKENS: dict[int, str] = {}


async def _probe(server: Server, token: str, path: str, query: str) -> None:
    url = httpx.URL(
        server.base_url
        + "/events/1.0.0/"
        + path.replace("?", "%3F").replace("#", "%23").replace(" ", "%20")
    )
    url = url.copy_with(query=quote(query, safe="=&;%+/?:@!$'()*,").encode() or None)
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
        async with client.stream(
            "GET", url, headers={"Authorization": f"Bearer {token}"}
        ) as response:
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                await response.aread()
            assert response.status_code < 500, (url, response.status_code)
        health = await client.get(server.base_url + "/healthz")
        assert health.status_code == 200
