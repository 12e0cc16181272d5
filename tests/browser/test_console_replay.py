"""The publisher console (CONTRACT §7, §8, §12) in a real browser, on a WebSub gateway: a
webhook delivery that failed every attempt is listed and "Replay" delivers it again; a
subscription is blocked and unblocked."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from playwright.async_api import Page, expect

from tests.e2e.helpers import eventually, fetch_token, get
from tests.e2e.receiver import Receiver, running_receiver
from tests.e2e.servers import Server, running_server
from tests.e2e.websub_setup import (
    ADMIN,
    LIMITED_SECRET,
    Hub,
    hub_for,
    wait_posts,
    websub_config,
)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


@pytest.fixture(scope="module")
def websub_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Three attempts 50 to 200 ms apart: a failing callback is dead-lettered at once."""
    directory = tmp_path_factory.mktemp("console-replay")
    with running_server(directory, websub_config(directory)) as server:
        yield server


@pytest.fixture
async def hub(websub_gateway: Server, receiver: Receiver) -> AsyncIterator[Hub]:
    async with hub_for(websub_gateway, receiver) as client:
        yield client


async def test_replay_in_the_console_delivers_a_dead_letter_again(
    page: Page, hub: Hub, receiver: Receiver
) -> None:
    room = uuid.uuid4().hex[:12]
    path = f"/console/{room}"
    callback = receiver.behaviour(path)
    callback.default = 500
    await hub.subscribe(f"/t/{room}", path)
    await hub.verified(path)
    await hub.publish(room, {"n": "replay me"})
    await wait_posts(receiver, path, 3, gateway=hub.base_url)  # every attempt failed

    async def dead() -> bool:
        letters = (await hub.admin("GET", "/deadletters")).json()
        return any(letter["topic"] == f"/t/{room}" for letter in letters)

    await eventually(dead, what="the dead letter")
    await page.goto(f"{hub.base_url}/portal/")
    await page.get_by_role("link", name="Publisher sign-in").click()
    await page.get_by_label("Admin token").fill(ADMIN)
    await page.get_by_role("button", name="Sign in").click()
    letter = page.get_by_role("table", name="Dead letters").get_by_role(
        "row", name=f"Hooks 1.0.0/t/{room}"
    )
    await expect(letter).to_contain_text("500")
    await expect(letter).to_contain_text("3")
    callback.default = 204  # the receiver is fixed
    await letter.get_by_role("button", name="Replay").click()
    await expect(page.get_by_role("status")).to_contain_text("Replayed.")
    replayed = (await wait_posts(receiver, path, 4, gateway=hub.base_url))[3]
    assert json.loads(replayed.body) == {"n": "replay me"}, "the replayed delivery arrived"
    await expect(letter).to_have_count(0)  # no longer a dead letter


async def test_block_and_unblock_a_subscription_in_the_console(
    page: Page, websub_gateway: Server
) -> None:
    """A blocked subscription's token is refused; unblocked, it is served again."""
    base = websub_gateway.base_url
    token = await fetch_token(base, "limited", LIMITED_SECRET)
    topic = f"/hooks/1.0.0/t/{uuid.uuid4().hex[:12]}"
    await page.goto(f"{base}/portal/")
    await page.get_by_role("link", name="Publisher sign-in").click()
    await page.get_by_label("Admin token").fill(ADMIN)
    await page.get_by_role("button", name="Sign in").click()
    row = page.get_by_role("table", name="Subscriptions").get_by_role(
        "row", name="limited Hooks 1.0.0"
    )
    await expect(row).to_contain_text("ACTIVE")
    await row.get_by_role("button", name="Block").click()
    await expect(row).to_contain_text("BLOCKED")
    assert (await get(base, topic, token)).status_code == 403
    await row.get_by_role("button", name="Unblock").click()
    await expect(row).to_contain_text("ACTIVE")
    assert (await get(base, topic, token)).status_code == 200
