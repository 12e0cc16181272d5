"""CONTRACT §4 token endpoint: client_credentials, scopes, JWT claims, JWKS, key persistence."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.e2e.helpers import (
    HTTP_TIMEOUT,
    fetch_token,
    room,
    sse_stream,
    token_response,
)
from tests.e2e.servers import MAIN_SECRET, SECRETS, Server, running_server, state_url

MAIN_SCOPES = {"events:read", "other:read", "feed:read", "feed:write"}


async def jwks(base: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
        response = await client.get(f"{base}/.well-known/jwks.json")
    assert response.status_code == 200
    body = response.json()
    assert isinstance(body, dict)
    return body


def verify(token: str, keys: dict[str, Any]) -> dict[str, Any]:
    kid = jwt.get_unverified_header(token)["kid"]
    jwk = next(k for k in keys["keys"] if k["kid"] == kid)
    claims: dict[str, Any] = jwt.decode(
        token,
        jwt.PyJWK(jwk).key,
        algorithms=["ES256"],
        audience="streambridge",
        issuer="streambridge",
    )
    return claims


@pytest.mark.parametrize("basic", [True, False], ids=["http-basic", "form-fields"])
async def test_client_credentials_answers_bearer_token(server: Server, basic: bool) -> None:
    response = await token_response(server.base_url, "main", MAIN_SECRET, basic=basic)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) >= {"access_token", "token_type", "expires_in", "scope"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert set(body["scope"].split()) == MAIN_SCOPES
    assert response.headers["cache-control"] == "no-store"


async def test_wrong_secret_is_invalid_client(server: Server) -> None:
    for basic in (True, False):
        response = await token_response(server.base_url, "main", "wrong-secret-xyz", basic=basic)
        assert response.status_code == 401, response.text
        assert response.json()["error"] == "invalid_client"
    unknown = await token_response(server.base_url, "nobody", "whatever-secret")
    assert unknown.status_code == 401
    assert unknown.json()["error"] == "invalid_client"


async def test_unsupported_grant_type(server: Server) -> None:
    response = await token_response(server.base_url, "main", MAIN_SECRET, grant_type="password")
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


async def test_scope_defaults_to_every_scope_of_subscribed_apis(server: Server) -> None:
    # nosub is subscribed to Events only: its topics' scopes, nothing of Feed.
    response = await token_response(server.base_url, "nosub", SECRETS["nosub"])
    assert response.status_code == 200
    assert set(response.json()["scope"].split()) == {"events:read", "other:read"}
    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    assert set(claims["scope"].split()) == {"events:read", "other:read"}


async def test_requested_scope_grants_the_allowed_part(server: Server) -> None:
    response = await token_response(
        server.base_url, "nosub", SECRETS["nosub"], scope="events:read feed:write"
    )
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "events:read"
    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    assert claims["scope"] == "events:read"


async def test_nothing_grantable_is_invalid_scope(server: Server) -> None:
    response = await token_response(server.base_url, "nosub", SECRETS["nosub"], scope="feed:write")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"


async def test_jwt_claims_header_and_jwks_verification(server: Server) -> None:
    before = int(time.time())
    token = await fetch_token(server.base_url, "main", MAIN_SECRET, scope="events:read")
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256"
    keys = await jwks(server.base_url)
    assert header["kid"] in {k["kid"] for k in keys["keys"]}
    claims = verify(token, keys)
    assert {"iss", "aud", "exp", "iat", "jti", "scope", "client_id"} <= set(claims)
    assert claims["iss"] == "streambridge"
    assert claims["aud"] == "streambridge"
    assert claims["client_id"] == "main"
    assert claims["scope"] == "events:read"
    assert before - 1 <= claims["iat"] <= int(time.time()) + 1
    assert claims["exp"] == claims["iat"] + 3600
    other = await fetch_token(server.base_url, "main", MAIN_SECRET)
    assert verify(other, keys)["jti"] != claims["jti"]
    for key in keys["keys"]:
        assert "d" not in key, "the JWKS must not publish private key material"


def restart_config(directory: Path) -> dict[str, Any]:
    return {
        "gateway": {"state": state_url(directory), "heartbeat": "1s"},
        "brokers": {"mem": {"type": "memory"}},
        "tiers": {"Free": {}},
        "apis": [
            {
                "name": "Keep",
                "version": "1.0.0",
                "context": "/keep",
                "broker": "mem",
                "topics": [{"name": "/t/{room}", "channel": "keep.{room}", "scopes": ["k:read"]}],
            }
        ],
        "applications": [
            {
                "name": "keeper",
                "client_id": "keeper",
                "client_secret": "keeper-secret-01",
                "subscriptions": [{"api": "Keep", "version": "1.0.0", "tier": "Free"}],
            }
        ],
    }


async def test_signing_key_survives_a_restart(tmp_path: Path) -> None:
    config = restart_config(tmp_path)
    with running_server(tmp_path, config) as first:
        token = await fetch_token(first.base_url, "keeper", "keeper-secret-01")
        kid = jwt.get_unverified_header(token)["kid"]
        assert kid in {k["kid"] for k in (await jwks(first.base_url))["keys"]}
    assert first.process.returncode is not None
    with running_server(tmp_path, config) as second:
        assert kid in {k["kid"] for k in (await jwks(second.base_url))["keys"]}
        async with sse_stream(second.base_url, f"/keep/1.0.0/t/{room()}", token) as stream:
            assert await stream.next_block() is not None
