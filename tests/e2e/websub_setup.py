"""The WebSub gateway of the e2e suite, and client helpers for its hub."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.helpers import HTTP_TIMEOUT, bearer, eventually, fetch_token, metrics_text
from tests.e2e.receiver import Delivery, Receiver
from tests.e2e.servers import Server, state_url

HOOKS_SECRET = "hooks-secret-0001"
LIMITED_SECRET = "limited-secret-0001"
OUTSIDER_SECRET = "outsider-secret-0001"
INBOUND_SECRET = "inbound-webhook-secret-0123"
ADMIN = "admin-token-websub-0001"
BASE = "/hooks/1.0.0"


def websub_config(directory: Path, **websub: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "allow_private_callbacks": True,
        "min_lease_seconds": 1,
        "retry": {"max_attempts": 3, "first_delay": "50ms", "max_delay": "200ms"},
        "timeout": "3s",
    }
    settings.update(websub)
    topics = [
        {"name": "/t/{room}", "channel": "wh.{room}", "scopes": ["hooks:read"]},
        {
            "name": "/text/{room}",
            "channel": "txt.{room}",
            "scopes": ["hooks:read"],
            "content_type": "text/plain",
        },
        {
            "name": "/in/{room}",
            "mode": "publish",
            "channel": "wh.{room}",
            "scopes": ["hooks:write"],
            "webhook_secret": INBOUND_SECRET,
        },
        {
            "name": "/intext/{room}",
            "mode": "publish",
            "channel": "txt.{room}",
            "scopes": ["hooks:write"],
        },
    ]
    return {
        "gateway": {
            "public_url": "http://gateway.test:8080",
            "state": state_url(directory),
            "admin_token": ADMIN,
        },
        "websub": settings,
        "brokers": {"mem": {"type": "memory"}},
        "tiers": {"Unlimited": {}, "One": {"max_connections": 1}},
        "apis": [
            {
                "name": "Hooks",
                "version": "1.0.0",
                "context": "/hooks",
                "protocol": "websub",
                "broker": "mem",
                "topics": topics,
            },
            {
                "name": "Other",
                "version": "1.0.0",
                "context": "/other",
                "protocol": "websub",
                "broker": "mem",
                "topics": [{"name": "/t", "channel": "other.t"}],
            },
        ],
        "applications": [
            {
                "name": "hooks",
                "client_id": "hooks",
                "client_secret": HOOKS_SECRET,
                "subscriptions": [{"api": "Hooks", "version": "1.0.0", "tier": "Unlimited"}],
            },
            {
                "name": "limited",
                "client_id": "limited",
                "client_secret": LIMITED_SECRET,
                "subscriptions": [{"api": "Hooks", "version": "1.0.0", "tier": "One"}],
            },
            {
                "name": "outsider",
                "client_id": "outsider",
                "client_secret": OUTSIDER_SECRET,
                "subscriptions": [{"api": "Other", "version": "1.0.0", "tier": "Unlimited"}],
            },
        ],
    }


class Hub:
    """Talks to one gateway's WebSub hub, topics and webhook management API."""

    def __init__(self, base_url: str, token: str, receiver: Receiver) -> None:
        self.base_url = base_url
        self.token = token
        self.receiver = receiver
        # Idle connections are dropped before uvicorn's 5 s keep-alive timeout closes them:
        # a request sent as the server closed its connection failed with ReadError.
        self.client = httpx.AsyncClient(
            base_url=base_url, timeout=HTTP_TIMEOUT, limits=httpx.Limits(keepalive_expiry=2.0)
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def request(
        self, form: dict[str, str] | list[tuple[str, str]], *, token: str | None = "", **kw: Any
    ) -> httpx.Response:
        token = self.token if token == "" else token
        return await self.client.post(f"{BASE}/hub", data=form, headers=bearer(token), **kw)

    async def subscribe(self, topic: str, path: str, **extra: str) -> httpx.Response:
        form = {
            "hub.mode": "subscribe",
            "hub.topic": topic,
            "hub.callback": self.receiver.url(path),
            **extra,
        }
        response = await self.request(form)
        assert response.status_code == 202, response.text
        return response

    async def verified(self, path: str, mode: str = "subscribe", count: int = 1) -> Delivery:
        """Wait for the ``count``-th verification GET, then for the hub to apply it."""

        async def arrived() -> list[Delivery] | None:
            gets = self.receiver.gets_to(path, mode)
            return gets if len(gets) >= count else None

        gets = await eventually(arrived, what=f"{mode} verification of {path}")
        want = mode == "subscribe"

        async def applied() -> bool:
            subs = await self.subscriptions()
            return any(s["callback"].startswith(self.receiver.url(path)) for s in subs) == want

        await eventually(applied, what=f"{mode} of {path} applied")
        return gets[count - 1]

    async def publish(self, room: str, payload: Any, *, topic: str = "in") -> None:
        kwargs: dict[str, Any] = (
            {"content": payload, "headers": {"Content-Type": "text/plain", **bearer(self.token)}}
            if isinstance(payload, str)
            else {"json": payload, "headers": bearer(self.token)}
        )
        response = await self.client.post(f"{BASE}/{topic}/{room}", **kwargs)
        assert response.status_code == 202, response.text

    async def posts(self, path: str, count: int, timeout: float = 5.0) -> list[Delivery]:
        return await wait_posts(self.receiver, path, count, timeout, self.base_url)

    async def admin(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {ADMIN}"}
        return await self.client.request(method, f"/api/v1/webhooks{path}", headers=headers, **kw)

    async def subscriptions(self) -> list[dict[str, Any]]:
        response = await self.admin("GET", "/subscriptions")
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]


@asynccontextmanager
async def hub_for(server: Server, receiver: Receiver) -> AsyncIterator[Hub]:
    """The hub of ``server`` (``websub_config``) as the ``hooks`` application."""
    token = await fetch_token(server.base_url, "hooks", HOOKS_SECRET)
    client = Hub(server.base_url, token, receiver)
    try:
        yield client
    finally:
        await client.aclose()


async def wait_posts(
    receiver: Receiver, path: str, count: int, timeout: float = 10.0, gateway: str | None = None
) -> list[Delivery]:
    """The first ``count`` POSTs to ``path``, once that many arrived (a deadline, not a
    target: twenty signed deliveries through the store took over 5 s on a loaded machine)."""

    async def enough() -> list[Delivery] | None:
        posts = receiver.posts_to(path)
        return posts if len(posts) >= count else None

    try:
        return await eventually(enough, timeout, what=f"{count} deliveries to {path}")
    except pytest.fail.Exception:
        bodies = [post.body[:40] for post in receiver.posts_to(path)]
        state = await webhook_state(gateway, path.rsplit("/", 1)[-1]) if gateway else ""
        pytest.fail(f"{len(bodies)} of {count} deliveries to {path} in {timeout}s: {bodies}{state}")


async def webhook_state(gateway: str, room: str) -> str:
    """What the gateway says of a room's topic and of its webhooks, for a failure's
    message: which stage (read, queued, attempted) an event that did not come reached."""
    try:
        text = await metrics_text(gateway)
    except (httpx.HTTPError, AssertionError) as exc:
        return f"\n(no metrics: {exc!r})"
    wanted = ("streambridge_webhook", 'protocol="websub"', room)
    lines = [
        line
        for line in text.splitlines()
        if not line.startswith("#") and any(w in line for w in wanted)
    ]
    return "\ngateway metrics:\n" + "\n".join(lines)


async def quiet(seconds: float = 0.3) -> None:
    """Let a delivery that must not happen have its chance (checked after)."""
    await asyncio.sleep(seconds)
