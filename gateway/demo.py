"""The embedded demo (CONTRACT §1): no config file, no external broker.

Its config and instructions, and the producer of ticker prices and chat announcements.

A memory broker, one SSE API (ticker prices, with a filtered and a windowed topic), one
WebSocket API (chat rooms: publish and subscribe), one WebSub API (big price moves as
webhooks), two APIs fronting in-process servers (an SSE clock, a WebSocket echo: CONTRACT
§13), one application with a fresh secret. The demo runs on loopback for local
development, so webhooks may go to a receiver on this machine
(``websub.allow_private_callbacks``).
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bridge.event import Event
from bridge.secrets import hash_secret
from gateway.runtime import Runtime

DEMO_CLIENT_ID = "demo"
DEMO_DEVELOPER = "newcomer"


def demo_config(
    secret: str | None = None,
    admin_token: str | None = None,
    *,
    clock_url: str = "http://127.0.0.1:8081",
    echo_url: str = "ws://127.0.0.1:8082",
) -> dict[str, Any]:
    """``clock_url``/``echo_url``: the in-process servers the Clock and Echo APIs front
    (gateway/demo_upstreams.py)."""
    return {
        "gateway": {
            "state": "sqlite:///.state/demo.db",
            "admin_token": admin_token or secrets.token_urlsafe(24),
            "cors": {"allow_origins": ["*"]},  # any local web app may try the demo (§4b)
        },
        "websub": {"allow_private_callbacks": True},  # local development only
        "portal": {"self_signup": True},
        "brokers": {"demo": {"type": "memory"}},
        "tiers": {
            "Gold": {"events_per_minute": 6000, "max_connections": 20},
            "Silver": {"events_per_minute": 600, "max_connections": 2},
        },
        "apis": [
            {
                "name": "Ticker",
                "version": "1.0.0",
                "description": "Live stock prices over Server-Sent Events: every tick, one"
                " symbol, big moves only, or 10-second statistics.",
                "context": "/ticker",
                "protocol": "sse",
                "broker": "demo",
                "tiers": ["Gold", "Silver"],
                "replay": {"max_events": 1000, "max_age": "10m"},
                "topics": [
                    {"name": "/prices", "channel": "demo.prices", "scopes": ["ticker:read"]},
                    {
                        "name": "/prices/{symbol}",
                        "channel": "demo.prices.{symbol}",
                        "scopes": ["ticker:read"],
                    },
                    {
                        "name": "/big-moves",
                        "channel": "demo.prices",
                        "scopes": ["ticker:read"],
                        "pipeline": [
                            {"filter": "data.change > 1.0 || data.change < -1.0"},
                            {"map": "{'symbol': data.symbol, 'price': data.price}"},
                        ],
                    },
                    {
                        "name": "/stats",
                        "channel": "demo.prices",
                        "scopes": ["ticker:read"],
                        "pipeline": [
                            {
                                "window": {
                                    "tumbling": "10s",
                                    "group_by": "data.symbol",
                                    "aggregate": {
                                        "ticks": "count()",
                                        "avg_price": "avg(data.price)",
                                        "high": "max(data.price)",
                                        "low": "min(data.price)",
                                    },
                                }
                            }
                        ],
                    },
                ],
            },
            {
                "name": "Chat",
                "version": "1.0.0",
                "description": "Chat rooms over WebSocket: publish to a room and read it.",
                "context": "/chat",
                "protocol": "websocket",
                "broker": "demo",
                "tiers": ["Gold"],
                "topics": [
                    {
                        "name": "/rooms/{room}",
                        "mode": "both",
                        "channel": "chat.{room}",
                        "scopes": ["chat:write"],
                    },
                    {
                        "name": "/announcements",
                        "mode": "subscribe",
                        "channel": "chat.announce",
                        "scopes": ["chat:read"],
                    },
                ],
            },
            {
                "name": "Alerts",
                "version": "1.0.0",
                "description": "Big price moves delivered as webhooks (WebSub).",
                "context": "/alerts",
                "protocol": "websub",
                "broker": "demo",
                "tiers": ["Gold"],
                "topics": [
                    {
                        "name": "/big-moves",
                        "channel": "demo.prices",
                        "scopes": ["alerts:read"],
                        "pipeline": [
                            {"filter": "data.change > 1.0 || data.change < -1.0"},
                            {"map": "{'symbol': data.symbol, 'price': data.price}"},
                        ],
                    },
                ],
            },
            *endpoint_apis(clock_url, echo_url),
        ],
        "applications": [
            {
                "name": "Demo app",
                "client_id": DEMO_CLIENT_ID,
                "client_secret": secret or secrets.token_urlsafe(18),
                "subscriptions": [
                    {"api": "Ticker", "version": "1.0.0", "tier": "Gold"},
                    {"api": "Chat", "version": "1.0.0", "tier": "Gold"},
                    {"api": "Alerts", "version": "1.0.0", "tier": "Gold"},
                    {"api": "Clock", "version": "1.0.0", "tier": "Gold"},
                    {"api": "Echo", "version": "1.0.0", "tier": "Gold"},
                ],
            },
        ],
    }


def endpoint_apis(clock_url: str, echo_url: str) -> list[dict[str, Any]]:
    """Two APIs fronting existing servers instead of a broker (CONTRACT §13)."""
    suspend = {"after_failures": 5, "for": "10s"}
    return [
        {
            "name": "Clock",
            "version": "1.0.0",
            "context": "/clock",
            "protocol": "sse",
            "endpoint": {"production": clock_url, "connect_timeout": "5s", "suspend": suspend},
            "tiers": ["Gold"],
            "topics": [{"name": "/ticks", "url_mapping": "/sse", "scopes": ["clock:read"]}],
        },
        {
            "name": "Echo",
            "version": "1.0.0",
            "context": "/echo",
            "protocol": "websocket",
            "endpoint": {
                "production": echo_url,
                "sandbox": echo_url,
                "connect_timeout": "5s",
                "suspend": suspend,
            },
            "tiers": ["Gold"],
            "topics": [
                {"name": "/chat", "mode": "both", "url_mapping": "/", "scopes": ["echo:rw"]}
            ],
        },
    ]


def demo_instructions(
    base_url: str, secret: str, admin_token: str, developer_password: str = ""
) -> str:
    ws_base = base_url.replace("http://", "ws://").replace("https://", "wss://")
    return f"""
Streambridge embedded demo is running at {base_url}
  application client_id: {DEMO_CLIENT_ID}
  client_secret:         {secret}   (new at every start)

Developer portal: {base_url}/portal/
  developer account: {DEMO_DEVELOPER} / {developer_password}   (new password at every start)
  Sign in, create an application, open Ticker 1.0.0, Subscribe (Gold), Generate token,
  and press "Try it" on /prices.
  publisher console: "Publisher sign-in" there, admin token: {admin_token}

Get a token:
  TOKEN=$(curl -s -u {DEMO_CLIENT_ID}:{secret} -d grant_type=client_credentials \\
    {base_url}/oauth2/token \\
    | python3 -c 'import sys,json; print(json.load(sys.stdin)["access_token"])')

Server-Sent Events:
  curl -N -H "Authorization: Bearer $TOKEN" {base_url}/ticker/1.0.0/prices
  curl -N -H "Authorization: Bearer $TOKEN" {base_url}/ticker/1.0.0/stats
  curl -N -H "Authorization: Bearer $TOKEN" "{base_url}/ticker/1.0.0?topic=/big-moves&topic=/stats"

WebSocket (type a line to publish it to the room):
  websocat "{ws_base}/chat/1.0.0/rooms/lobby?access_token=$TOKEN"
  python3 -m websockets "{ws_base}/chat/1.0.0/rooms/lobby?access_token=$TOKEN"

Fronting existing servers (an SSE clock and a WebSocket echo server, run in-process):
  curl -N -H "Authorization: Bearer $TOKEN" {base_url}/clock/1.0.0/ticks
  python3 -m websockets "{ws_base}/echo/1.0.0/chat?access_token=$TOKEN"

WebSub (webhooks; the callback must answer GET with the hub.challenge it is sent):
  curl -i -H "Authorization: Bearer $TOKEN" {base_url}/alerts/1.0.0/hub \\
    -d hub.mode=subscribe -d hub.topic=/big-moves \\
    -d hub.callback=http://127.0.0.1:9000/hook -d hub.secret=$(openssl rand -hex 16)

Management API (admin token new at every start; OpenAPI at {base_url}/docs):
  curl -s -H "Authorization: Bearer {admin_token}" {base_url}/api/v1/apis
  curl -s -H "Authorization: Bearer {admin_token}" {base_url}/api/v1/apis/Ticker/1.0.0/asyncapi
"""


SYMBOLS = {"ACME": 120.0, "GLOBEX": 48.0, "INITECH": 9.5}


def demo_jobs(developer_password: str) -> list[Callable[[Runtime], Awaitable[None]]]:
    """The demo's background work: its developer account, then the producer."""

    async def account_then_produce(runtime: Runtime) -> None:
        assert runtime.store is not None
        password_hash = await asyncio.to_thread(hash_secret, developer_password)
        await runtime.store.set_password(DEMO_DEVELOPER, password_hash, time.time())
        await produce(runtime)

    return [account_then_produce]


async def produce(runtime: Runtime, interval: float = 0.5) -> None:
    connector = runtime.connectors["demo"]
    prices = dict(SYMBOLS)
    rng = random.Random()  # noqa: S311 - demo data, not security
    seq = 0
    next_announcement = time.monotonic()
    while True:
        for symbol, price in prices.items():
            seq += 1
            change = round(rng.gauss(0, 0.8), 2)
            prices[symbol] = max(0.01, round(price + change, 2))
            data = {
                "seq": seq,
                "symbol": symbol,
                "price": prices[symbol],
                "change": change,
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            await connector.publish("demo.prices", Event("demo.prices", data, key=symbol))
            await connector.publish(
                f"demo.prices.{symbol}", Event(f"demo.prices.{symbol}", data, key=symbol)
            )
        if time.monotonic() >= next_announcement:
            next_announcement += 30
            await connector.publish(
                "chat.announce",
                Event(
                    "chat.announce", {"text": "Welcome to the Streambridge demo", "at": time.time()}
                ),
            )
        await asyncio.sleep(interval)
