"""Streams in a real browser on another origin (CONTRACT §4b), as a web app uses them.

A page served from its own loopback port fetches a token (a preflighted cross-origin
POST), opens ``EventSource(url?access_token=...)`` or a WebSocket, and lists what
arrives. The gateway is restarted under an open page: the browser's own EventSource
reconnection (it sends ``Last-Event-ID``) must resume with nothing lost or doubled, on
MQTT and on Kafka topics.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from playwright.async_api import Browser, Page, expect

from tests.e2e.helpers import KAFKA, fetch_token, kafka_producer
from tests.e2e.servers import Server, application_to_all, free_port, running_server, state_url
from tests.e2e.test_mqtt_e2e import mosquitto_pub

SECRET = "browser-secret-0001"
MQTT = "mqtt://127.0.0.1:1883"
DEADLINE_MS = 20_000

Send = Callable[[Any], Awaitable[None]]


def browser_config(directory: Path, origin: str, tag: str) -> dict[str, Any]:
    def sse(name: str, broker: str, channel: str) -> dict[str, Any]:
        return {
            "name": name,
            "version": "1.0.0",
            "context": f"/{name.lower()}",
            "protocol": "sse",
            "broker": broker,
            "replay": {"max_events": 1000, "max_age": "10m"},
            "topics": [{"name": "/t/{room}", "channel": channel, "scopes": ["feed:read"]}],
        }

    apis = [
        sse("Mqtt", "mqtt", "browser/{room}"),
        sse("Kafka", "kafka", "browser-{room}"),
        {
            "name": "Chat",
            "version": "1.0.0",
            "context": "/chat",
            "protocol": "websocket",
            "broker": "mem",
            "topics": [{"name": "/rooms/{room}", "mode": "both", "channel": "chat.{room}"}],
        },
    ]
    return {
        "gateway": {"state": state_url(directory), "cors": {"allow_origins": [origin]}},
        "brokers": {
            "mqtt": {"type": "mqtt", "url": MQTT, "qos": 1, "client_id": f"sb-browser-{tag}"},
            "kafka": {"type": "kafka", "bootstrap": KAFKA},
            "mem": {"type": "memory"},
        },
        "tiers": {"Gold": {}},
        "apis": apis,
        "applications": [application_to_all("web", SECRET, apis, "Gold")],
    }


class Gateway:
    """A gateway on a fixed port and directory, so it can be restarted under a page."""

    def __init__(self, directory: Path, origin: str) -> None:
        self.directory = directory
        self.config = browser_config(directory, origin, uuid.uuid4().hex[:8])
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._stack = contextlib.ExitStack()
        self.server: Server | None = None

    async def start(self) -> None:
        context = running_server(self.directory, self.config, port=self.port)
        self.server = await asyncio.to_thread(self._stack.enter_context, context)

    async def stop(self) -> None:
        await asyncio.to_thread(self._stack.close)
        self._stack = contextlib.ExitStack()


@pytest.fixture
async def gateway(tmp_path: Path, web_app: str) -> AsyncIterator[Gateway]:
    running = Gateway(tmp_path, web_app)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


def page_url(origin: str, page: str, gateway: Gateway, path: str, **extra: str) -> str:
    query = {"gateway": gateway.url, "path": path, "client": "web", "secret": SECRET, **extra}
    return f"{origin}/{page}?{urlencode(query)}"


async def received(page: Page) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = await page.evaluate("window.received")
    return events


async def numbers(page: Page) -> list[int]:
    """The ``n`` of every event the page listed, probes left out, in arrival order."""
    out = []
    for event in await received(page):
        data = json.loads(event["data"])
        if "n" in data:
            out.append(data["n"])
    return out


async def live(page: Page, send: Send) -> None:
    """Send probes until one reaches the page: the broker subscription is up."""
    for attempt in range(100):
        await send({"probe": attempt})
        with contextlib.suppress(AssertionError):
            await expect(page.get_by_role("list", name="Events")).not_to_be_empty(timeout=300)
            return
    pytest.fail("no probe reached the page")


async def until_numbers(page: Page, wanted: list[int]) -> None:
    async with asyncio.timeout(DEADLINE_MS / 1000):
        while (got := await numbers(page)) != wanted:
            assert len(got) <= len(wanted) and got == wanted[: len(got)], got
            await asyncio.sleep(0.05)  # polling interval, not synchronisation


async def reconnects_and_resumes(page: Page, send: Send, gateway: Gateway) -> None:
    """1-3 before a restart, 4-5 while the gateway is down, 6 after: each exactly once."""
    await expect(page.get_by_role("status")).to_have_text("open", timeout=DEADLINE_MS)
    await live(page, send)
    for n in (1, 2, 3):
        await send({"n": n})
    await until_numbers(page, [1, 2, 3])
    await gateway.stop()
    await expect(page.get_by_role("status")).to_have_text("reconnecting", timeout=DEADLINE_MS)
    for n in (4, 5):
        await send({"n": n})
    await gateway.start()
    async with asyncio.timeout(DEADLINE_MS / 1000):
        while await page.evaluate("window.opens") < 2:
            await asyncio.sleep(0.05)  # polling interval, not synchronisation
    await send({"n": 6})
    await until_numbers(page, [1, 2, 3, 4, 5, 6])
    ids = [event["id"] for event in await received(page)]
    assert all(ids) and len(set(ids)) == len(ids), ids


async def mqtt_page(browser: Browser, gateway: Gateway, web_app: str) -> tuple[Page, Send]:
    """A page reading an MQTT topic of its own, and how to publish to that topic."""
    room = uuid.uuid4().hex[:12]
    page = await browser.new_page()
    await page.goto(page_url(web_app, "sse.html", gateway, f"/mqtt/1.0.0/t/{room}"))

    async def send(payload: Any) -> None:
        await asyncio.to_thread(mosquitto_pub, f"browser/{room}", json.dumps(payload))

    return page, send


async def test_a_page_on_another_origin_reads_sse_with_access_token(
    browser: Browser, gateway: Gateway, web_app: str
) -> None:
    page, send = await mqtt_page(browser, gateway, web_app)
    await expect(page.get_by_role("status")).to_have_text("open", timeout=DEADLINE_MS)
    await live(page, send)
    await send({"n": 1})
    await until_numbers(page, [1])
    (first, *_) = await received(page)
    await expect(
        page.get_by_role("list", name="Events").get_by_role("listitem").first
    ).to_contain_text(first["id"])


async def test_mqtt_stream_resumes_through_a_gateway_restart(
    browser: Browser, gateway: Gateway, web_app: str
) -> None:
    await reconnects_and_resumes(*await mqtt_page(browser, gateway, web_app), gateway)


async def test_kafka_stream_resumes_through_a_gateway_restart(
    browser: Browser, gateway: Gateway, web_app: str
) -> None:
    room = uuid.uuid4().hex[:12]
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(f"browser-{room}", 1, 1)])
    finally:
        await admin.close()
    page = await browser.new_page()
    await page.goto(page_url(web_app, "sse.html", gateway, f"/kafka/1.0.0/t/{room}"))

    async with kafka_producer() as producer:

        async def send(payload: Any) -> None:
            data = json.dumps(payload).encode()
            await producer.send_and_wait(f"browser-{room}", data, partition=0)

        await reconnects_and_resumes(page, send, gateway)


async def test_a_websocket_page_publishes_and_receives(
    browser: Browser, gateway: Gateway, web_app: str
) -> None:
    page = await browser.new_page()
    await page.goto(page_url(web_app, "websocket.html", gateway, "/chat/1.0.0/rooms/lobby"))
    await expect(page.get_by_role("status")).to_have_text("open", timeout=DEADLINE_MS)
    await page.get_by_label("Message").fill('{"text": "hello from the browser"}')
    await page.get_by_role("button", name="Send").click()
    events = page.get_by_role("list", name="Events")
    await expect(events).to_contain_text("hello from the browser", timeout=DEADLINE_MS)


async def test_a_disallowed_origin_is_refused(
    browser: Browser, gateway: Gateway, stranger: str
) -> None:
    assert gateway.server is not None
    token = await fetch_token(gateway.url, "web", SECRET)
    page = await browser.new_page()
    await page.goto(page_url(stranger, "sse.html", gateway, "/mqtt/1.0.0/t/x"))
    status = page.get_by_role("status")
    await expect(status).to_have_text("failed: TypeError: Failed to fetch", timeout=DEADLINE_MS)
    await page.goto(page_url(stranger, "sse.html", gateway, "/mqtt/1.0.0/t/x", token=token))
    await expect(status).to_have_text("closed", timeout=DEADLINE_MS)
    await page.goto(
        page_url(stranger, "websocket.html", gateway, "/chat/1.0.0/rooms/lobby", token=token)
    )
    await expect(status).to_have_text("closed 1006", timeout=DEADLINE_MS)
    assert await received(page) == []
