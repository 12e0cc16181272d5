"""Browser fixtures: Debian's chromium under Playwright, and web pages on other origins.

Chromium is launched by path (scripts/browser.sh installs it); Playwright's own browser
download is never used. The test pages are served by a tiny static server on a loopback
port of their own, so the gateway is another origin to them, as to any web app.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, async_playwright

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
