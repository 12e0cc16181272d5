"""The portal's browser tests share these: the demo's printed accounts, and the steps a
developer takes in the portal, by role and label as a person would."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

from playwright.async_api import Page, expect

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
