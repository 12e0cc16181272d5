"""The README's ``streambridge.v1`` browser client in Debian's chromium (Playwright):
it reconnects with the last id through a gateway restart and shows every event once
(CONTRACT §6, Kafka offsets in the ids)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from playwright.async_api import Browser, Page

from tests.e2e.helpers import eventually, fetch_token
from tests.e2e.servers import free_port, running_server
from tests.e2e.test_websocket_v1 import APP_SECRET, BROKERS, broker_config, live_pair, publish


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    page = await browser.new_page()
    try:
        yield page
    finally:
        await page.close()


async def shown(page: Page) -> list[Any]:
    items = await page.get_by_role("list", name="events").get_by_role("listitem").all()
    return [json.loads(await item.text_content() or "null") for item in items]


def numbers(items: list[Any]) -> list[int]:
    return [i["n"] for i in items if isinstance(i, dict) and "n" in i]


async def test_the_browser_client_resumes_through_a_gateway_restart(
    tmp_path: Path, web_app: str, page: Page
) -> None:
    channel = f"v1-browser-{uuid.uuid4().hex[:12]}"
    settings = broker_config(tmp_path, BROKERS["kafka"], channel)
    port = free_port()
    with running_server(tmp_path, settings, port=port) as server:
        async with live_pair(server) as (_, pub):
            token = await fetch_token(server.base_url, "app", APP_SECRET)
            await page.goto(
                f"{web_app}/v1-client.html#url={server.ws_url}/feed/1.0.0/t&token={token}"
            )

            async def connected() -> bool:
                await publish(pub, "hello", {"hello": True})
                return bool(await shown(page))

            await eventually(connected, timeout=20, what="the page's stream")
            for n in (1, 2):
                await publish(pub, f"n{n}", {"n": n})

            async def first_two() -> bool:
                return numbers(await shown(page)) == [1, 2]

            await eventually(first_two, what="events 1 and 2 in the page")
    producer = AIOKafkaProducer(bootstrap_servers=BROKERS["kafka"]["bootstrap"], acks="all")
    await producer.start()
    try:  # while the gateway is down
        await producer.send_and_wait(channel, json.dumps({"n": 3}).encode())
    finally:
        await producer.stop()
    with running_server(tmp_path, settings, port=port) as server:
        async with live_pair(server) as (_, pub):

            async def resumed() -> bool:
                return numbers(await shown(page)) == [1, 2, 3]

            await eventually(resumed, timeout=20, what="the page's resume after the restart")
            await publish(pub, "n4", {"n": 4})

            async def all_four() -> bool:
                return numbers(await shown(page)) == [1, 2, 3, 4]

            await eventually(all_four, what="event 4 in the page")
    assert numbers(await shown(page)) == [1, 2, 3, 4], "nothing lost or doubled"
