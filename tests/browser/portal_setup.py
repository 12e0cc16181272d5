"""The portal's browser tests share these: the demo's printed accounts, and the steps a
developer takes in the portal, by role and label as a person would."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import httpx
from playwright.async_api import Page, expect

from tests.e2e.helpers import HTTP_TIMEOUT
from tests.e2e.servers import Server

STREAMBRIDGE = Path(sys.executable).parent / "streambridge"
WAIT_MS = 15_000


class Demo:
    def __init__(self, server: Server, printed: tuple[str, str, str]) -> None:
        self.server = server
        self.password, self.admin_token, self.client_secret = printed
        self.portal = f"{server.base_url}/portal/"


def username() -> str:
    return "dev-" + uuid.uuid4().hex[:8]


async def sign_up(page: Page, demo: Demo, name: str, password: str = "correct-horse") -> None:
    await page.goto(demo.portal)
    await page.get_by_role("link", name="Sign up").click()
    await page.get_by_label("Username").fill(name)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign up").click()
    await expect(page.get_by_text(f"Signed in as {name}")).to_be_visible()


async def create_application(page: Page, name: str) -> str:
    await page.get_by_role("link", name="Applications").click()
    await page.get_by_label("Application name").fill(name)
    await page.get_by_role("button", name="Create application").click()
    secret = page.get_by_label("Client secret")
    await expect(secret).not_to_have_value("")
    return await page.get_by_label("Client ID").input_value()


async def open_api(page: Page, title: str) -> None:
    await page.get_by_role("link", name="Catalogue").click()
    await page.get_by_role("link", name=title).click()
    await expect(page.get_by_role("heading", name=title, level=1)).to_be_visible()


async def subscribe_and_get_token(page: Page, application: str, tier: str = "Gold") -> None:
    await page.get_by_label("Application", exact=True).select_option(label=application)
    await page.get_by_label("Tier", exact=True).select_option(tier)
    await page.get_by_role("button", name="Subscribe").click()
    await expect(page.get_by_role("status")).to_contain_text("Subscribed")
    await page.get_by_role("button", name="Generate token").click()
    await expect(page.get_by_label("Access token")).not_to_have_value("")


async def block_and_see_revoked(page: Page, demo: Demo, client_id: str) -> None:
    """Block the application's subscription (management API): the open Try it view shows
    the revoked signal, marked as such, and that its stream is closed."""
    admin = {"Authorization": f"Bearer {demo.admin_token}"}
    async with httpx.AsyncClient(
        base_url=demo.server.base_url, headers=admin, timeout=HTTP_TIMEOUT
    ) as client:
        (subscription,) = (
            await client.get("/api/v1/subscriptions", params={"application": client_id})
        ).json()
        blocked = await client.post(f"/api/v1/subscriptions/{subscription['id']}/block")
        assert blocked.status_code == 200
    events = page.get_by_role("list", name="Events")
    await expect(events.get_by_role("listitem").first).to_contain_text("revoked", timeout=WAIT_MS)
    await expect(page.get_by_text("closed (revoked)", exact=True)).to_be_visible()
