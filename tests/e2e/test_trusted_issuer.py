"""Tokens from an external IdP (auth.trusted_issuers), validated through its JWKS over HTTP.

The IdP is a real HTTP server on a loopback port serving a JWKS document; the gateway
fetches it with its async client at start and again when a token names an unknown key.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from gateway.auth import REFRESH_COOLDOWN
from tests.e2e.helpers import eventually, get, publisher, room, sse_stream
from tests.e2e.servers import Server, running_server, state_url

IDP_ISSUER = "https://idp.example.test/"


class IdentityProvider:
    """Holds signing keys; serves the public ones as a JWKS; counts fetches."""

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}
        self.fetches = 0
        self.add_key("rsa-1", rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def add_key(self, kid: str, key: Any) -> None:
        self.keys[kid] = key

    def jwks(self) -> dict[str, Any]:
        out = []
        for kid, key in self.keys.items():
            if isinstance(key, rsa.RSAPrivateKey):
                jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
                jwk["alg"] = "RS256"
            else:
                jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
                jwk["alg"] = "ES256"
            out.append({**jwk, "kid": kid, "use": "sig"})
        return {"keys": out}

    def token(self, kid: str, **claims: Any) -> str:
        key = self.keys[kid]
        now = int(time.time())
        body = {
            "iss": IDP_ISSUER,
            "aud": "streambridge",
            "sub": "partner",
            "client_id": "partner",
            "iat": now,
            "exp": now + 300,
            "scope": "feed:read",
            **claims,
        }
        algorithm = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
        return jwt.encode(body, key, algorithm=algorithm, headers={"kid": kid})


@pytest.fixture(scope="module")
def idp() -> Iterator[tuple[IdentityProvider, str]]:
    provider = IdentityProvider()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            provider.fetches += 1
            body = json.dumps(provider.jwks()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield provider, f"http://127.0.0.1:{httpd.server_address[1]}/jwks.json"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def gateway(
    idp: tuple[IdentityProvider, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    _, jwks_url = idp
    directory: Path = tmp_path_factory.mktemp("trusted-issuer")
    config = {
        "gateway": {"state": state_url(directory)},
        "auth": {
            "trusted_issuers": [
                {"issuer": IDP_ISSUER, "jwks_url": jwks_url, "audience": "streambridge"}
            ]
        },
        "brokers": {"mem": {"type": "memory"}},
        "tiers": {"Open": {}},
        "apis": [
            {
                "name": "Feed",
                "version": "1",
                "context": "/feed",
                "broker": "mem",
                "tiers": ["Open"],
                "topics": [
                    {"name": "/t/{room}", "channel": "feed.{room}", "scopes": ["feed:read"]}
                ],
            },
            {
                "name": "FeedIn",
                "version": "1",
                "context": "/feed-in",
                "protocol": "websocket",
                "broker": "mem",
                "tiers": ["Open"],
                "topics": [{"name": "/t/{room}", "mode": "publish", "channel": "feed.{room}"}],
            },
        ],
        "applications": [
            {
                "name": "partner",
                "client_id": "partner",
                "client_secret": "partner-secret-01",
                "subscriptions": [
                    {"api": "Feed", "version": "1", "tier": "Open"},
                    {"api": "FeedIn", "version": "1", "tier": "Open"},
                ],
            }
        ],
    }
    with running_server(directory, config) as server:
        yield server


async def test_external_token_streams_events(
    gateway: Server, idp: tuple[IdentityProvider, str]
) -> None:
    provider, _ = idp
    token = provider.token("rsa-1")
    channel = room()
    async with sse_stream(gateway.base_url, f"/feed/1/t/{channel}", token) as stream:
        async with publisher(gateway.ws_url, f"/feed-in/1/t/{channel}", token) as pub:
            await pub.send({"n": 1})
        event = await stream.next_event()
    assert event is not None and json.loads(event.data) == {"n": 1}


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"aud": "someone-else"}, "audience"),
        ({"iss": "https://other.example.test/"}, "issuer"),
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"scope": "other:read"}, "scope"),
    ],
)
async def test_external_token_checked_like_ours(
    gateway: Server, idp: tuple[IdentityProvider, str], claims: dict[str, Any], reason: str
) -> None:
    provider, _ = idp
    response = await get(gateway.base_url, f"/feed/1/t/{room()}", provider.token("rsa-1", **claims))
    assert response.status_code == (403 if reason == "scope" else 401), response.text


async def test_rotated_key_is_fetched_again(
    gateway: Server, idp: tuple[IdentityProvider, str]
) -> None:
    """A token naming a kid the gateway has not seen makes it fetch the JWKS once more."""
    provider, _ = idp
    before = provider.fetches
    provider.add_key("ec-2", ec.generate_private_key(ec.SECP256R1()))
    token = provider.token("ec-2")

    async def accepted() -> bool:
        response = await get(gateway.base_url, f"/feed/1/t/{room()}", token)
        return response.status_code == 200

    # Re-fetches are rate-limited (REFRESH_COOLDOWN after the fetch at start-up).
    await eventually(accepted, timeout=REFRESH_COOLDOWN + 5, what="rotated key accepted")
    assert provider.fetches > before


async def test_token_signed_by_a_stranger_is_refused(
    gateway: Server, idp: tuple[IdentityProvider, str]
) -> None:
    provider, _ = idp
    stranger = IdentityProvider()
    token = stranger.token("rsa-1")  # same kid and issuer, another key
    response = await get(gateway.base_url, f"/feed/1/t/{room()}", token)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert provider.fetches >= 1
