"""CONTRACT §4: every row of the access table, for SSE and WebSocket, and its order."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from websockets.exceptions import InvalidStatus

from tests.e2e.helpers import (
    assert_problem,
    eventually,
    fetch_token,
    frames_until_closed,
    get,
    metric,
    metrics_text,
    publisher,
    recv_json,
    room,
    sse_stream,
    ws_connect,
    ws_refusal,
)
from tests.e2e.servers import MAIN_SECRET, SECRETS, Server, running_server, state_url

BAD_TOKENS = ["missing", "garbage", "expired", "hs256", "other-key"]


def forged_token(server: Server, kind: str) -> str | None:
    """Tokens the gateway must refuse; all but the defect look like its own."""
    stored = server.signing_key()
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "streambridge",
        "aud": "streambridge",
        "sub": "main",
        "client_id": "main",
        "iat": now,
        "exp": now + 600,
        "jti": "forged",
        "sbg": 1,  # a key generation (random per application: test_forged_tokens_... sets it)
        "scope": "events:read other:read feed:read feed:write",
    }
    headers = {"kid": stored["kid"]}
    if kind == "missing":
        return None
    if kind == "garbage":
        return "not-a-jwt"
    if kind == "expired":  # signed with the gateway's own key, expired beyond any leeway
        claims |= {"iat": now - 7200, "exp": now - 3600}
        return jwt.encode(claims, stored["pem"], algorithm="ES256", headers=headers)
    if kind == "hs256":
        return jwt.encode(claims, "a-shared-secret-of-at-least-32-bytes!", "HS256", headers)
    assert kind == "other-key"
    return jwt.encode(claims, ec.generate_private_key(ec.SECP256R1()), "ES256", headers)


@pytest.fixture
async def main_token(server: Server) -> str:
    return await fetch_token(server.base_url, "main", MAIN_SECRET)


async def token_of(server: Server, client_id: str, scope: str | None = None) -> str:
    return await fetch_token(server.base_url, client_id, SECRETS[client_id], scope)


def feed(r: str) -> str:
    return f"/feed/1.0.0/in/e2e/{r}"


# --- 401 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", BAD_TOKENS)
async def test_sse_refuses_bad_tokens_with_401(server: Server, kind: str) -> None:
    response = await get(server.base_url, f"/events/1.0.0/t/{room()}", forged_token(server, kind))
    assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("kind", BAD_TOKENS)
async def test_websocket_refuses_bad_tokens_with_401(server: Server, kind: str) -> None:
    response = await ws_refusal(
        server.ws_url, f"/feed/1.0.0/watch/{room()}", forged_token(server, kind)
    )
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert json.loads(response.body)["status"] == 401


async def test_forged_tokens_differ_from_a_good_one_only_by_their_defect(
    server: Server, main_token: str
) -> None:
    # The same claims and kid, signed by the gateway's key and not expired, are accepted:
    # so the refusals above are caused by the defect, not by the claims. The key
    # generation is random per application: the forger is given the real one.
    stored = server.signing_key()
    unverified = jwt.decode(
        forged_token(server, "other-key") or "", options={"verify_signature": False}
    )
    unverified["sbg"] = jwt.decode(main_token, options={"verify_signature": False})["sbg"]
    good = jwt.encode(unverified, stored["pem"], algorithm="ES256", headers={"kid": stored["kid"]})
    async with sse_stream(server.base_url, f"/events/1.0.0/t/{room()}", good) as stream:
        assert await stream.next_block() is not None


# --- 404 ----------------------------------------------------------------------------------

SSE_UNKNOWN = {
    "unknown-api": "/nope/1.0.0/t",
    "unknown-version": "/events/9.9.9/t/x",
    "created-api": "/draft-sse/1.0.0/t",
    "retired-api": "/old-sse/1.0.0/t",
    "unknown-topic": "/events/1.0.0/nope/x",
}
WS_UNKNOWN = {
    "unknown-api": "/nope/1.0.0/t",
    "created-api": "/draft-websocket/1.0.0/t",
    "retired-api": "/old-websocket/1.0.0/t",
    "unknown-topic": "/feed/1.0.0/nope/x",
}


@pytest.mark.parametrize("path", SSE_UNKNOWN.values(), ids=SSE_UNKNOWN.keys())
async def test_sse_unknown_or_hidden_is_404(server: Server, main_token: str, path: str) -> None:
    assert_problem(await get(server.base_url, path, main_token), 404)


@pytest.mark.parametrize("path", WS_UNKNOWN.values(), ids=WS_UNKNOWN.keys())
async def test_websocket_unknown_or_hidden_is_404(
    server: Server, main_token: str, path: str
) -> None:
    response = await ws_refusal(server.ws_url, path, main_token)
    assert response.status_code == 404
    assert json.loads(response.body)["status"] == 404


# --- 426 ----------------------------------------------------------------------------------


async def test_plain_get_on_websocket_api_is_426(server: Server, main_token: str) -> None:
    response = await get(server.base_url, f"/feed/1.0.0/watch/{room()}", main_token)
    assert_problem(response, 426)
    assert response.headers["upgrade"].lower() == "websocket"


async def test_upgrade_on_sse_api_is_refused_with_426(server: Server, main_token: str) -> None:
    response = await ws_refusal(server.ws_url, f"/events/1.0.0/t/{room()}", main_token)
    assert response.status_code == 426


# --- 403 ----------------------------------------------------------------------------------


async def test_not_subscribed_is_403(server: Server) -> None:
    token = await token_of(server, "nosub")  # subscribed to Events only
    async with sse_stream(server.base_url, f"/events/1.0.0/t/{room()}", token) as stream:
        assert await stream.next_block() is not None
    assert_problem(await get(server.base_url, f"/short/1.0.0/t/{room()}", token), 403)
    response = await ws_refusal(server.ws_url, f"/feed/1.0.0/watch/{room()}", token)
    assert response.status_code == 403


async def test_blocked_subscription_is_403(server: Server) -> None:
    token = await token_of(server, "blocked")
    assert_problem(await get(server.base_url, f"/events/1.0.0/t/{room()}", token), 403)
    response = await ws_refusal(server.ws_url, f"/feed/1.0.0/watch/{room()}", token)
    assert response.status_code == 403


async def test_insufficient_scope_is_403(server: Server) -> None:
    narrow = await token_of(server, "main", scope="feed:write")
    response = await get(server.base_url, f"/events/1.0.0/t/{room()}", narrow)
    body = assert_problem(response, 403)
    assert body["code"] == "insufficient_scope"
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    narrow_ws = await token_of(server, "main", scope="events:read")
    refused = await ws_refusal(server.ws_url, f"/feed/1.0.0/watch/{room()}", narrow_ws)
    assert refused.status_code == 403
    assert json.loads(refused.body)["code"] == "insufficient_scope"


# --- 503 ----------------------------------------------------------------------------------


async def test_blocked_api_is_503(server: Server, main_token: str) -> None:
    assert_problem(await get(server.base_url, "/frozen-sse/1.0.0/t", main_token), 503)
    response = await ws_refusal(server.ws_url, "/frozen-websocket/1.0.0/t", main_token)
    assert response.status_code == 503


# --- table order --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client", "protocol", "path", "status"),
    [
        (None, "sse", "/nope/1.0.0/t", 401),  # no token before unknown API
        (None, "ws", "/nope/1.0.0/t", 401),
        (None, "sse", "/frozen-sse/1.0.0/t", 401),
        ("main", "ws", "/draft-sse/1.0.0/t", 404),  # hidden before wrong protocol
        ("nosub", "ws", "/short/1.0.0/t/x", 426),  # wrong protocol before not subscribed
        ("nosub", "sse", "/feed/1.0.0/watch/x", 426),
        ("nosub", "sse", "/frozen-sse/1.0.0/t", 403),  # not subscribed before API blocked
        ("blocked", "ws", "/feed/1.0.0/watch/x", 403),  # blocked subscription before scope
    ],
)
async def test_checks_apply_in_table_order(
    server: Server, client: str | None, protocol: str, path: str, status: int
) -> None:
    token = await token_of(server, client) if client else None
    if protocol == "sse":
        assert_problem(await get(server.base_url, path, token), status)
    else:
        assert (await ws_refusal(server.ws_url, path, token)).status_code == status


# --- 429: max_connections -----------------------------------------------------------------


async def test_sse_max_connections_is_429_until_one_closes(server: Server) -> None:
    token = await token_of(server, "single")
    path = f"/events/1.0.0/t/{room()}"
    async with sse_stream(server.base_url, path, token) as first:
        assert await first.next_block() is not None
        response = await get(server.base_url, path, token)
        assert_problem(response, 429)
        assert int(response.headers["retry-after"]) > 0

    async def accepted() -> bool:
        return (await get(server.base_url, path, token)).status_code == 200

    await eventually(accepted, what="a new stream after the first closed")


async def test_websocket_max_connections_is_429_until_one_closes(server: Server) -> None:
    token = await token_of(server, "single")
    path = f"/feed/1.0.0/watch/{room()}"
    async with ws_connect(server.ws_url, path, token):
        response = await ws_refusal(server.ws_url, path, token)
        assert response.status_code == 429
        assert int(response.headers["Retry-After"]) > 0

    async def accepted() -> bool:
        try:
            async with ws_connect(server.ws_url, path, token):
                return True
        except InvalidStatus as exc:
            assert exc.response.status_code == 429
            return False

    await eventually(accepted, what="a new WebSocket after the first closed")


# --- events_per_minute --------------------------------------------------------------------


async def test_sse_events_per_minute_ends_with_throttled_event(
    server: Server, main_token: str
) -> None:
    token = await token_of(server, "trickle-sse")  # Trickle: 3 events per minute
    r = room()
    async with (
        sse_stream(server.base_url, f"/events/1.0.0/t/{r}", token) as stream,
        publisher(server.ws_url, feed(r), main_token) as pub,
    ):
        await pub.send_all([{"n": n} for n in range(5)])
        delivered = await stream.events(3)
        assert [json.loads(e.data) for e in delivered] == [{"n": 0}, {"n": 1}, {"n": 2}]
        assert all(e.id for e in delivered)
        final = await stream.next_event()
        assert final is not None and final.event == "throttled"
        assert final.id is None
        assert not any(line.startswith("id:") for line in stream.blocks[-1].splitlines())
        retry_after = json.loads(final.data)["retry_after"]
        assert isinstance(retry_after, int | float) and retry_after > 0
        assert await stream.rest() == [], "the stream closes after throttled"


async def test_websocket_events_per_minute_closes_1008_throttled(
    server: Server, main_token: str
) -> None:
    token = await token_of(server, "trickle-ws")
    r = room()
    async with (
        ws_connect(server.ws_url, f"/feed/1.0.0/watch/{r}", token) as ws,
        publisher(server.ws_url, feed(r), main_token) as pub,
    ):
        await pub.send_all([{"n": n} for n in range(5)])
        frames, close = await frames_until_closed(ws)
    assert [json.loads(f) for f in frames] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert close.code == 1008
    assert close.reason == "throttled"


# --- ?access_token= -----------------------------------------------------------------------


async def test_access_token_query_parameter(server: Server, main_token: str) -> None:
    r = room()
    async with (
        sse_stream(
            server.base_url, f"/events/1.0.0/t/{r}", params={"access_token": main_token}
        ) as stream,
        ws_connect(server.ws_url, f"/feed/1.0.0/watch/{r}?access_token={main_token}") as ws,
        publisher(server.ws_url, f"{feed(r)}?access_token={main_token}", "") as pub,
    ):
        await pub.send({"via": "query"})
        event = await stream.next_event()
        assert event is not None and json.loads(event.data) == {"via": "query"}
        assert await recv_json(ws) == {"via": "query"}


# --- expiry on an open stream -------------------------------------------------------------


@pytest.fixture(scope="module")
def short_lived(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory: Path = tmp_path_factory.mktemp("short-lived")
    config = {
        "gateway": {"state": state_url(directory), "heartbeat": "1s"},
        "auth": {"token_ttl": 2},
        "brokers": {"mem": {"type": "memory"}},
        "tiers": {"Free": {}},
        "apis": [
            {
                "name": "Clock",
                "version": "1.0.0",
                "context": "/clock",
                "broker": "mem",
                "topics": [{"name": "/t", "channel": "clock"}],
            },
            {
                "name": "ClockWs",
                "version": "1.0.0",
                "context": "/clock-ws",
                "protocol": "websocket",
                "broker": "mem",
                "topics": [{"name": "/t", "channel": "clock"}],
            },
        ],
        "applications": [
            {
                "name": "tick",
                "client_id": "tick",
                "client_secret": "tick-secret-01",
                "subscriptions": [
                    {"api": "Clock", "version": "1.0.0", "tier": "Free"},
                    {"api": "ClockWs", "version": "1.0.0", "tier": "Free"},
                ],
            }
        ],
    }
    with running_server(directory, config) as running:
        yield running


async def test_token_expiry_ends_open_streams(short_lived: Server) -> None:
    token = await fetch_token(short_lived.base_url, "tick", "tick-secret-01")
    expires_at = jwt.decode(token, options={"verify_signature": False})["exp"]
    budget = expires_at + 5 - time.time() + 1  # the contract allows 5 s after exp

    async def sse_side() -> float:
        async with sse_stream(short_lived.base_url, "/clock/1.0.0/t", token) as stream:
            final = await stream.next_event(budget)
            at = time.time()
            assert final is not None and final.event == "revoked"
            assert final.id is None
            assert await stream.rest() == []
            return at

    async def ws_side() -> float:
        async with ws_connect(short_lived.ws_url, "/clock-ws/1.0.0/t", token) as ws:
            frames, close = await frames_until_closed(ws, budget)
            assert frames == []
            assert close.code == 1008
            return time.time()

    before = await metrics_text(short_lived.base_url)
    sse_at, ws_at = await asyncio.gather(sse_side(), ws_side())
    for at in (sse_at, ws_at):
        assert expires_at - 1 <= at <= expires_at + 5
    after = await metrics_text(short_lived.base_url)
    labels = {"api": "Clock", "version": "1.0.0"}
    assert metric(after, "streambridge_revoked_total", **labels) == (
        metric(before, "streambridge_revoked_total", **labels) + 1
    )
