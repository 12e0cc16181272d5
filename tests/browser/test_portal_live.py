"""The portal's live views in a real browser: Try it on a WebSocket API speaks
``streambridge.v1`` (CONTRACT §6, §12), on the embedded demo."""

from __future__ import annotations

import json
import uuid

import httpx
from playwright.async_api import Page, expect

from tests.browser.portal_setup import (
    WAIT_MS,
    Demo,
    create_application,
    open_api,
    sign_up,
    subscribe_and_get_token,
    username,
)
from tests.e2e.helpers import HTTP_TIMEOUT


async def try_chat_room(page: Page, demo: Demo, tier: str) -> tuple[str, str]:
    """A new developer subscribed to Chat with ``tier`` in Try it on a fresh room, connected;
    returns their client id and the room."""
    await sign_up(page, demo, username())
    client_id = await create_application(page, "chat " + tier)
    await open_api(page, "Chat 1.0.0")
    await subscribe_and_get_token(page, "chat " + tier, tier)
    await page.get_by_role("button", name="Try it /rooms/{room}").click()
    room = uuid.uuid4().hex[:8]
    await page.get_by_label("Topic URL").fill(f"/chat/1.0.0/rooms/{room}")
    await page.get_by_role("button", name="Connect").click()
    await expect(page.get_by_text("connected (WebSocket)")).to_be_visible()
    return client_id, room


async def send_message(page: Page, text: str) -> None:
    await page.get_by_label("Message").fill(json.dumps({"text": text}))
    await page.get_by_role("button", name="Send").click()


async def test_websocket_try_it_shows_ids_acks_and_the_throttled_signal(
    page: Page, demo: Demo
) -> None:
    """Try it speaks streambridge.v1 (CONTRACT §6): each event with its id, each publish
    confirmed, and the throttled signal shown as such (a tier of 3 events a minute)."""
    admin = {"Authorization": f"Bearer {demo.admin_token}"}
    async with httpx.AsyncClient(
        base_url=demo.server.base_url, headers=admin, timeout=HTTP_TIMEOUT
    ) as client:
        made = await client.put("/api/v1/tiers/Trickle", json={"events_per_minute": 3})
        assert made.status_code in (200, 201), made.text
        chat = (await client.get("/api/v1/apis/Chat/1.0.0")).json()
        if "Trickle" not in chat["tiers"]:
            chat["tiers"].append("Trickle")
            updated = await client.put("/api/v1/apis/Chat/1.0.0", json=chat)
            assert updated.status_code == 200, updated.text
    await try_chat_room(page, demo, "Trickle")
    events = page.get_by_role("list", name="Events")
    for n in range(3):
        await send_message(page, f"trickle {n}")
        await expect(events).to_contain_text(f"trickle {n}")
    await expect(events.get_by_role("listitem").filter(has_text="confirmed")).to_have_count(3)
    received = events.get_by_role("listitem").filter(has_text="trickle")
    ids = [await item.locator("code").inner_text() for item in await received.all()]
    assert len(ids) == 3 and len(set(ids)) == 3 and all(ids), ids
    await send_message(page, "one too many")
    await expect(events.get_by_role("listitem").first).to_contain_text("throttled")
    await expect(events.get_by_role("listitem").first).to_contain_text("retry_after")
    await expect(page.get_by_text("closed (throttled)", exact=True)).to_be_visible()


async def test_websocket_try_it_shows_a_revoked_stream_as_such(page: Page, demo: Demo) -> None:
    client_id, _ = await try_chat_room(page, demo, "Gold")
    await send_message(page, "before the block")
    events = page.get_by_role("list", name="Events")
    await expect(events.get_by_role("listitem").filter(has_text="before the block")).to_have_count(
        1
    )
    admin = {"Authorization": f"Bearer {demo.admin_token}"}
    async with httpx.AsyncClient(
        base_url=demo.server.base_url, headers=admin, timeout=HTTP_TIMEOUT
    ) as client:
        (subscription,) = (
            await client.get("/api/v1/subscriptions", params={"application": client_id})
        ).json()
        blocked = await client.post(f"/api/v1/subscriptions/{subscription['id']}/block")
        assert blocked.status_code == 200
    await expect(events.get_by_role("listitem").first).to_contain_text("revoked", timeout=WAIT_MS)
    await expect(page.get_by_text("closed (revoked)", exact=True)).to_be_visible()
