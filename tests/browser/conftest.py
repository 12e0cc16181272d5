"""Browser fixtures: Debian's chromium under Playwright, web pages on other origins, and
the embedded demo (``streambridge serve``) with a page on it for the portal tests.

Chromium is launched by path (scripts/browser.sh installs it); Playwright's own browser
download is never used. The test pages are served by a tiny static server on a loopback
port of their own, so the gateway is another origin to them, as to any web app.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright

from tests.browser.portal_setup import STREAMBRIDGE, Demo
from tests.e2e.helpers import eventually
from tests.e2e.servers import Server, running_server

CHROMIUM = "/usr/bin/chromium"
PAGES = Path(__file__).parent / "pages"


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def static_site(directory: Path) -> Iterator[str]:
    """Serve ``directory`` on a free loopback port; yields its origin."""
    handler = functools.partial(_Quiet, directory=str(directory))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as httpd:
        thread = threading.Thread(target=httpd.serve_forever, name="static-site", daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{httpd.server_address[1]}"
        finally:
            httpd.shutdown()
            thread.join()


@pytest.fixture(scope="session")
def web_app() -> Iterator[str]:
    """The origin of the web app the gateways under test allow."""
    with static_site(PAGES) as origin:
        yield origin


@pytest.fixture(scope="session")
def stranger() -> Iterator[str]:
    """Another origin serving the same pages, which no gateway allows."""
    with static_site(PAGES) as origin:
        yield origin


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: bash scripts/browser.sh"
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            yield chromium
        finally:
            await chromium.close()


# --- the demo, for the portal tests ---------------------------------------------------------


@pytest.fixture(scope="session")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("portal-demo")
    with running_server(directory, None, command=[str(STREAMBRIDGE), "serve"]) as server:
        yield server


@pytest.fixture
async def demo(demo_server: Server) -> Demo:
    async def printed() -> tuple[str, str, str] | None:
        text = demo_server.stdout()
        found = [
            re.search(pattern, text)
            for pattern in (
                r"developer account: newcomer / (\S+)",
                r"admin token: (\S+)",
                r"client_secret:\s+(\S+)",
            )
        ]
        return tuple(m.group(1) for m in found) if all(found) else None  # type: ignore[union-attr,return-value]

    return Demo(demo_server, await eventually(printed, what="the demo's printed accounts"))


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("STREAMBRIDGE_SCREENSHOTS")
    directory = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1200, "height": 860})
    opened = await context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.on(
        "console",
        lambda message: (
            errors.append(message.text)
            if message.type == "error" and "Content Security Policy" in message.text
            else None
        ),
    )
    try:
        yield opened
    finally:
        await context.close()
    assert errors == [], errors
