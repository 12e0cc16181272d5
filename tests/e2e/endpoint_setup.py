"""The gateway config of the endpoint tests (CONTRACT §13): an SSE API fronting an
``SseOrigin`` and a WebSocket API fronting an ``EchoOrigin``, one application with
production and sandbox keys subscribed to both."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.e2e.servers import state_url

SECRET = "endpoint-secret-01"
ADMIN = "endpoint-admin-token-0123456789"
TICKS = "/clock/1.0.0/ticks"


def endpoint_config(
    directory: Path,
    *,
    sse_url: str,
    ws_url: str,
    ws_sandbox: str | None = None,
    suspend: dict[str, Any] | None = None,
    tier: dict[str, Any] | None = None,
) -> dict[str, Any]:
    suspend = suspend or {"after_failures": 3, "for": "30s"}
    echo_endpoint: dict[str, Any] = {
        "production": ws_url,
        "connect_timeout": "2s",
        "suspend": suspend,
    }
    if ws_sandbox is not None:
        echo_endpoint["sandbox"] = ws_sandbox
    return {
        "gateway": {
            "public_url": "http://127.0.0.1:8080",
            "state": state_url(directory),
            "max_message_bytes": 4096,
            "admin_token": ADMIN,
        },
        "tiers": {"Plan": tier or {}},
        "apis": [
            {
                "name": "Clock",
                "version": "1.0.0",
                "context": "/clock",
                "protocol": "sse",
                # 10 s: on a loaded 2-core run the origin's headers took over 2 s once, the
                # gateway connected again, and the origin briefly held two connections.
                "endpoint": {"production": sse_url, "connect_timeout": "10s", "suspend": suspend},
                "replay": {"max_events": 1000, "max_age": "10m"},
                "topics": [
                    {"name": "/ticks", "url_mapping": "/stream/ticks"},
                    {"name": "/rooms/{room}", "url_mapping": "/rooms/{room}/events"},
                ],
            },
            {
                "name": "Echo",
                "version": "1.0.0",
                "context": "/echo",
                "protocol": "websocket",
                "endpoint": echo_endpoint,
                "topics": [
                    {"name": "/chat", "mode": "both", "url_mapping": "/echo"},
                    {"name": "/rooms/{room}", "mode": "both", "url_mapping": "/rooms/{room}"},
                    {"name": "/close/{code}", "mode": "both", "url_mapping": "/close/{code}"},
                ],
            },
        ],
        "applications": [
            {
                "name": "app",
                "client_id": "app",
                "client_secret": SECRET,
                "subscriptions": [
                    {"api": "Clock", "version": "1.0.0", "tier": "Plan"},
                    {"api": "Echo", "version": "1.0.0", "tier": "Plan"},
                ],
            }
        ],
    }
