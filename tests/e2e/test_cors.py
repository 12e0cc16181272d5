"""Browsers on other origins (CONTRACT §4b) over HTTP, as a browser's requests look.

One gateway: ``gateway.cors`` allows APP; the API ``Own`` replaces that list with OTHER,
the API ``Open`` with ``*``. The browser itself is driven in tests/browser.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from tests.e2e.helpers import HTTP_TIMEOUT, assert_problem, fetch_token, get, room, ws_connect
from tests.e2e.servers import Server, application_to_all, running_server, state_url
from tests.e2e.test_sse_express import ASGI, connect_raw, read_until, undated

APP = "http://app.example:5173"
OTHER = "http://other.example"
EVIL = "http://evil.example"
SECRET = "cors-secret-0001"


def cors_config(directory: Path) -> dict[str, Any]:
    def api(name: str, protocol: str, **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "version": "1.0.0",
            "context": f"/{name.lower()}",
            "protocol": protocol,
            "broker": "mem",
            "topics": [{"name": "/t/{room}", "channel": f"{name}.{{room}}", "mode": "both"}]
            if protocol == "websocket"
            else [{"name": "/t/{room}", "channel": f"{name}.{{room}}"}],
            **extra,
        }

    apis = [
        api("Shared", "sse"),
        api("Own", "sse", cors={"allow_origins": [OTHER]}),
        api("Open", "sse", cors={"allow_origins": ["*"]}),
        api("Sockets", "websocket"),
        api("Hooks", "websub"),
    ]
    return {
        "gateway": {"state": state_url(directory), "cors": {"allow_origins": [APP]}},
        "brokers": {"mem": {"type": "memory"}},
        "tiers": {"Free": {}},
        "apis": apis,
        "applications": [application_to_all("web", SECRET, apis, "Free")],
    }


@pytest.fixture(scope="module")
def cors_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("cors-server")
    with running_server(directory, cors_config(directory)) as running:
        yield running


def vary(response: httpx.Response) -> list[str]:
    return [v.strip().lower() for v in response.headers.get("vary", "").split(",")]


def assert_allowed(response: httpx.Response, origin: str) -> None:
    assert response.headers.get("access-control-allow-origin") == origin, response.headers
    assert "origin" in vary(response)
    assert "access-control-allow-credentials" not in response.headers


async def preflight(base: str, path: str, origin: str, method: str = "GET") -> httpx.Response:
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
        return await client.options(
            base + path,
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": "authorization, last-event-id, content-type",
            },
        )


async def test_a_stream_from_an_allowed_origin_is_readable(cors_server: Server) -> None:
    token = await fetch_token(cors_server.base_url, "web", SECRET)
    response = await get(cors_server.base_url, f"/shared/1.0.0/t/{room()}", token, Origin=APP)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert_allowed(response, APP)


async def test_error_answers_carry_the_origin_so_the_page_can_read_them(
    cors_server: Server,
) -> None:
    base = cors_server.base_url
    unauthenticated = await get(base, f"/shared/1.0.0/t/{room()}", "not-a-jwt", Origin=APP)
    assert_problem(unauthenticated, 401)
    assert_allowed(unauthenticated, APP)
    exposed = unauthenticated.headers["access-control-expose-headers"].lower()
    assert {"retry-after", "link", "www-authenticate"} <= {h.strip() for h in exposed.split(",")}
    token = await fetch_token(base, "web", SECRET)
    unknown = await get(base, "/nothing/1.0.0/t/x", token, Origin=APP)
    assert_problem(unknown, 404)
    assert_allowed(unknown, APP)


async def test_preflight_from_an_allowed_origin_gets_204(cors_server: Server) -> None:
    response = await preflight(cors_server.base_url, "/shared/1.0.0/t/x", APP)
    assert response.status_code == 204
    assert response.content == b""
    assert response.headers["access-control-allow-origin"] == APP
    assert "GET" in response.headers["access-control-allow-methods"]
    allowed = response.headers["access-control-allow-headers"].lower()
    assert {"authorization", "content-type", "last-event-id"} <= {
        h.strip() for h in allowed.split(",")
    }
    assert int(response.headers["access-control-max-age"]) > 0
    assert "access-control-allow-credentials" not in response.headers


async def test_preflight_from_another_origin_gets_403(cors_server: Server) -> None:
    response = await preflight(cors_server.base_url, "/shared/1.0.0/t/x", EVIL)
    assert_problem(response, 403)
    assert "access-control-allow-origin" not in response.headers


async def test_an_apis_own_origins_replace_the_gateways(cors_server: Server) -> None:
    base = cors_server.base_url
    assert (await preflight(base, "/own/1.0.0/t/x", OTHER)).status_code == 204
    assert (await preflight(base, "/own/1.0.0/t/x", APP)).status_code == 403
    assert (await preflight(base, "/shared/1.0.0/t/x", OTHER)).status_code == 403
    token = await fetch_token(base, "web", SECRET)
    own = await get(base, f"/own/1.0.0/t/{room()}", token, Origin=OTHER)
    assert own.status_code == 200
    assert_allowed(own, OTHER)
    shared = await get(base, f"/shared/1.0.0/t/{room()}", token, Origin=OTHER)
    assert shared.status_code == 200
    assert "access-control-allow-origin" not in shared.headers


async def test_star_allows_every_origin_without_credentials(cors_server: Server) -> None:
    token = await fetch_token(cors_server.base_url, "web", SECRET)
    response = await get(cors_server.base_url, f"/open/1.0.0/t/{room()}", token, Origin=EVIL)
    assert response.status_code == 200
    assert_allowed(response, "*")
    answer = await preflight(cors_server.base_url, "/open/1.0.0/t/x", EVIL)
    assert answer.status_code == 204
    assert answer.headers["access-control-allow-origin"] == "*"


async def test_token_endpoint_and_jwks_answer_allowed_origins(cors_server: Server) -> None:
    base = cors_server.base_url
    assert (await preflight(base, "/oauth2/token", APP, "POST")).status_code == 204
    assert (await preflight(base, "/oauth2/token", EVIL, "POST")).status_code == 403
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, headers={"Origin": APP}) as client:
        granted = await client.post(
            f"{base}/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=("web", SECRET),
        )
        refused = await client.post(
            f"{base}/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=("web", "wrong"),
        )
        keys = await client.get(f"{base}/.well-known/jwks.json")
        management = await client.get(f"{base}/api/v1/apis")
    assert granted.status_code == 200
    assert_allowed(granted, APP)
    assert refused.status_code == 401
    assert_allowed(refused, APP)
    assert keys.status_code == 200
    assert_allowed(keys, APP)
    assert "access-control-allow-origin" not in management.headers


async def test_websub_topic_get_answers_allowed_origins(cors_server: Server) -> None:
    token = await fetch_token(cors_server.base_url, "web", SECRET)
    response = await get(cors_server.base_url, f"/hooks/1.0.0/t/{room()}", token, Origin=APP)
    assert response.status_code == 200
    assert 'rel="hub"' in response.headers["link"]
    assert_allowed(response, APP)


async def test_websocket_handshake_checks_the_origin(cors_server: Server) -> None:
    token = await fetch_token(cors_server.base_url, "web", SECRET)
    path = f"/sockets/1.0.0/t/{room()}"
    with pytest.raises(InvalidStatus) as refused:
        async with ws_connect(cors_server.ws_url, path, token, origin=EVIL):
            pass
    assert refused.value.response.status_code == 403
    async with ws_connect(cors_server.ws_url, path, token, origin=APP) as ws:
        await ws.send('{"n": 1}')
    async with ws_connect(cors_server.ws_url, path, token) as ws:  # no Origin: not a browser
        await ws.send('{"n": 2}')


async def test_a_streams_cors_headers_are_the_same_on_the_express_and_asgi_paths(
    cors_server: Server,
) -> None:
    """gateway/sse_express.py writes the head past the middleware: for allowed, refused
    and ``*`` origins it carries what the middleware adds on the ASGI path."""
    token = await fetch_token(cors_server.base_url, "web", SECRET)
    for api, origin in [("shared", APP), ("shared", EVIL), ("own", OTHER), ("open", EVIL)]:
        path = f"/{api}/1.0.0/t/{room()}"
        headers = f"Authorization: Bearer {token}\r\nOrigin: {origin}\r\n"
        heads = []
        for extra in ("", ASGI):
            sock = await connect_raw(cors_server, path, headers + extra)
            try:
                heads.append(undated(await read_until(sock, b"", b": ping\n\n")))
            finally:
                sock.close()
        assert heads[0].startswith(b"HTTP/1.1 200 OK\r\n"), heads[0]
        assert heads[0] == heads[1], (api, origin)
        assert (b"access-control-allow-origin" in heads[0].lower()) == (
            origin != EVIL or api == "open"
        )
