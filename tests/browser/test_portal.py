"""The developer portal and publisher console (CONTRACT §12) in a real browser, on the
embedded demo, driven by role and label as a person would use it.

Screenshots of the catalogue, Try it and the console are written to the directory named
by ``STREAMBRIDGE_SCREENSHOTS`` (``make screenshots`` sets docs/img), else to a tmp dir.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from pathlib import Path

import httpx
from playwright.async_api import FilePayload, Page, Route, expect

from tests.browser.portal_setup import (
    WAIT_MS,
    Demo,
    block_and_see_revoked,
    create_application,
    open_api,
    sign_up,
    subscribe_and_get_token,
    username,
)
from tests.e2e.helpers import HTTP_TIMEOUT, fetch_token, sse_stream

# --- developers ----------------------------------------------------------------------------


async def test_sign_up_then_the_catalogue_and_an_api_page(
    page: Page, demo: Demo, screenshots: Path
) -> None:
    await sign_up(page, demo, username())
    apis = page.get_by_role("list", name="APIs")
    for title in ("Ticker 1.0.0", "Chat 1.0.0", "Alerts 1.0.0"):
        await expect(apis.get_by_role("link", name=title)).to_be_visible()
    await page.screenshot(
        path=str(screenshots / "catalogue.png"), clip={"x": 0, "y": 0, "width": 1200, "height": 320}
    )
    await open_api(page, "Ticker 1.0.0")
    topics = page.get_by_role("table", name="Topics")
    prices = topics.get_by_role("row").filter(has_text="/prices").first
    await expect(prices).to_contain_text("subscribe")
    await expect(prices).to_contain_text("ticker:read")
    await expect(page.get_by_role("list", name="Tiers")).to_contain_text("Gold")
    await expect(page.get_by_role("region", name="AsyncAPI document")).to_contain_text(
        "AsyncAPI 3.0.0"
    )
    async with page.expect_download() as info:
        await page.get_by_role("link", name="Download AsyncAPI").click()
    download = await info.value
    assert download.suggested_filename == "Ticker-1.0.0-asyncapi.json"
    assert json.loads(Path(await download.path()).read_text())["asyncapi"] == "3.0.0"


async def test_a_late_catalogue_does_not_replace_the_sign_up_form(page: Page, demo: Demo) -> None:
    """A developer who opens Sign up before the start page's catalogue has come keeps the
    form: the catalogue, answered late, is not shown over it (CI once saw the form vanish
    under the test's typing)."""
    held: asyncio.Future[Route] = asyncio.get_running_loop().create_future()

    async def hold(route: Route) -> None:
        if not held.done():
            held.set_result(route)
        else:
            await route.continue_()

    await page.route("**/portal/api/apis", hold)
    await page.goto(demo.portal)
    async with asyncio.timeout(WAIT_MS / 1000):
        first = await held  # the start page asked for the catalogue
    await page.get_by_role("link", name="Sign up").click()
    await expect(page.get_by_role("heading", name="Sign up", level=1)).to_be_visible()
    async with page.expect_response("**/portal/api/apis") as answered:
        await first.continue_()
    await (await answered.value).finished()
    await expect(page.get_by_role("heading", name="Sign up", level=1)).to_be_visible()
    await expect(page.get_by_role("list", name="APIs")).to_have_count(0)
    name = username()
    await page.get_by_label("Username").fill(name)
    await page.get_by_label("Password").fill("correct-horse")
    await page.get_by_role("button", name="Sign up").click()
    await expect(page.get_by_text(f"Signed in as {name}")).to_be_visible()


async def test_a_newcomer_subscribes_and_watches_live_prices(
    page: Page, demo: Demo, screenshots: Path
) -> None:
    """The demo's promise: sign in, create an application, subscribe, try it."""
    await page.goto(demo.portal)
    await page.get_by_role("link", name="Sign in", exact=True).click()
    await page.get_by_label("Username").fill("newcomer")
    await page.get_by_label("Password").fill(demo.password)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_text("Signed in as newcomer")).to_be_visible()
    name = "Prices " + uuid.uuid4().hex[:6]
    await create_application(page, name)
    await open_api(page, "Ticker 1.0.0")
    await subscribe_and_get_token(page, name)
    await page.get_by_role("button", name="Try it /prices", exact=True).click()
    events = page.get_by_role("list", name="Events")
    # At least three: the ticker goes on, and a count of exactly 3 raced it (ci39 saw 0, 4).
    await expect(events.get_by_role("listitem").nth(2)).to_be_visible(timeout=WAIT_MS)
    first = events.get_by_role("listitem").first
    await expect(first).to_contain_text('"symbol"')
    await expect(first.locator("code")).to_have_text(re.compile(r"\S+"))
    await page.get_by_role("region", name="Try it").scroll_into_view_if_needed()
    await page.screenshot(path=str(screenshots / "try-it.png"))


async def test_try_it_on_a_websocket_topic_publishes_and_receives(page: Page, demo: Demo) -> None:
    await sign_up(page, demo, username())
    application = await create_application(page, "chat app")
    assert application
    await open_api(page, "Chat 1.0.0")
    await subscribe_and_get_token(page, "chat app")
    await page.get_by_role("button", name="Try it /rooms/{room}").click()
    room = uuid.uuid4().hex[:8]
    await page.get_by_label("Topic URL").fill(f"/chat/1.0.0/rooms/{room}")
    await page.get_by_role("button", name="Connect").click()
    await expect(page.get_by_text("connected (WebSocket)")).to_be_visible()
    await page.get_by_label("Message").fill('{"text": "hello portal"}')
    await page.get_by_role("button", name="Send").click()
    await expect(page.get_by_role("list", name="Events")).to_contain_text("hello portal")


async def test_a_developer_sees_only_their_own_applications(page: Page, demo: Demo) -> None:
    first, second = username(), username()
    await sign_up(page, demo, first)
    client_id = await create_application(page, f"{first}'s app")
    await page.get_by_role("button", name="Sign out").click()
    # The sign-out request ends before the next page load, or that load is still signed in.
    await expect(page.get_by_role("link", name="Sign up")).to_be_visible()
    await sign_up(page, demo, second)
    await page.get_by_role("link", name="Applications").click()
    await expect(page.get_by_role("list", name="Your applications")).not_to_contain_text(first)
    csrf = await page.evaluate("fetch('/portal/api/session').then(r => r.json())")
    status = await page.evaluate(
        """([csrf, app]) => fetch('/portal/api/subscriptions', {method: 'POST',
             headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf},
             body: JSON.stringify({application: app, api: 'Ticker', version: '1.0.0',
                                   tier: 'Gold'})}).then(r => r.status)""",
        [csrf["csrf"], client_id],
    )
    assert status == 404


# --- security of the UI ------------------------------------------------------------------------


async def test_session_cookie_csrf_and_content_security_policy(page: Page, demo: Demo) -> None:
    response = await page.goto(demo.portal)
    assert response is not None
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert await page.locator("script:not([src])").count() == 0
    await sign_up(page, demo, username())
    (cookie,) = [c for c in await page.context.cookies() if c["name"] == "streambridge_portal"]
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    status = await page.evaluate(
        """fetch('/portal/api/applications', {method: 'POST',
             headers: {'Content-Type': 'application/json'},
             body: JSON.stringify({name: 'no csrf'})}).then(r => r.status)"""
    )
    assert status == 403


async def test_bad_sign_ins_and_duplicates(demo: Demo) -> None:
    base = demo.server.base_url + "/portal/api"
    name = username()
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
        made = await client.post(f"{base}/signup", json={"username": name, "password": "pw-123456"})
        assert made.status_code == 201
        again = await client.post(f"{base}/signup", json={"username": name, "password": "x" * 9})
        assert again.status_code == 409
        wrong = await client.post(f"{base}/signin", json={"username": name, "password": "nope"})
        unknown = await client.post(
            f"{base}/signin", json={"username": username(), "password": "nope"}
        )
        assert wrong.status_code == unknown.status_code == 401
        assert wrong.json()["detail"] == unknown.json()["detail"]
        statuses = [
            (await client.post(f"{base}/signin", json={"username": name, "password": "no"}))
            for _ in range(12)
        ]
        assert statuses[-1].status_code == 429
        assert int(statuses[-1].headers["retry-after"]) > 0


async def test_a_deleted_developers_session_ends(page: Page, demo: Demo) -> None:
    name = username()
    await sign_up(page, demo, name)
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
        deleted = await client.delete(
            f"{demo.server.base_url}/api/v1/developers/{name}",
            headers={"Authorization": f"Bearer {demo.admin_token}"},
        )
    assert deleted.status_code == 204
    await page.get_by_role("link", name="Applications").click()
    await expect(page.get_by_role("alert")).to_contain_text("sign in")
    await expect(page.get_by_role("link", name="Sign in", exact=True)).to_be_visible()


# --- publishers ----------------------------------------------------------------------------------

BAD_ASYNCAPI = "asyncapi: 3.0.0\ninfo: {title: Broken}\nchannels: 12\n"
GOOD_ASYNCAPI = """asyncapi: 3.0.0
info: {title: Quotes, version: 2.0.0}
channels:
  quotes: {address: quotes}
operations:
  onQuote: {action: send, channel: {$ref: '#/channels/quotes'}}
"""


async def test_the_publisher_console(page: Page, demo: Demo, screenshots: Path) -> None:
    await page.goto(demo.portal)
    await page.get_by_role("link", name="Publisher sign-in").click()
    await page.get_by_label("Admin token").fill(demo.admin_token)
    await page.get_by_role("button", name="Sign in").click()
    apis = page.get_by_role("table", name="APIs")
    ticker = apis.get_by_role("row", name="Ticker 1.0.0")
    await expect(ticker).to_contain_text("PUBLISHED")
    for action in ("Publish", "Deprecate", "Retire", "Block"):
        await expect(ticker.get_by_role("button", name=action, exact=True)).to_be_visible()
    await expect(ticker.get_by_role("img", name="Live chart of Ticker 1.0.0")).to_be_visible()
    token = await fetch_token(demo.server.base_url, "demo", demo.client_secret)
    async with sse_stream(demo.server.base_url, "/ticker/1.0.0/prices", token) as stream:
        await stream.events(3, timeout=10)
        await expect(ticker).to_contain_text("1 connections", timeout=WAIT_MS)
        await expect(ticker).to_contain_text(re.compile(r"[1-9][0-9.]* out"), timeout=WAIT_MS)
        document = page.get_by_label("AsyncAPI document")
        await document.fill(BAD_ASYNCAPI)
        await page.get_by_role("button", name="Import AsyncAPI").click()
        await expect(page.get_by_role("alert")).to_contain_text("AsyncAPI")
        await document.fill(GOOD_ASYNCAPI)
        await page.get_by_role("button", name="Import AsyncAPI").click()
        quotes = apis.get_by_role("row", name="Quotes 2.0.0")
        await expect(quotes).to_contain_text("CREATED")
        await expect(quotes.get_by_role("button", name="Deprecate")).to_be_disabled()
        upload: FilePayload = {
            "name": "filed.yaml",
            "mimeType": "application/yaml",
            "buffer": GOOD_ASYNCAPI.replace("Quotes", "Filed").encode(),
        }
        await page.get_by_label("AsyncAPI file").set_input_files(files=upload)
        await page.get_by_role("button", name="Import AsyncAPI").click()
        await expect(apis.get_by_role("row", name="Filed 2.0.0")).to_contain_text("CREATED")
        await quotes.get_by_role("button", name="Publish", exact=True).click()
        await expect(apis.get_by_role("row", name="Quotes 2.0.0")).to_contain_text("PUBLISHED")
        await expect(page.get_by_text("Dead letters", exact=True)).to_be_visible()
        await page.screenshot(path=str(screenshots / "console.png"), full_page=True)


async def test_oversized_import_is_refused_with_413(page: Page, demo: Demo) -> None:
    await page.goto(demo.portal)
    await page.get_by_role("link", name="Publisher sign-in").click()
    await page.get_by_label("Admin token").fill(demo.admin_token)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_label("AsyncAPI document").fill("x" * 1_100_000)
    await page.get_by_role("button", name="Import AsyncAPI").click()
    await expect(page.get_by_role("alert")).to_contain_text("limited to")


async def test_try_it_shows_a_revoked_stream_as_such(page: Page, demo: Demo) -> None:
    await sign_up(page, demo, username())
    client_id = await create_application(page, "revoked app")
    await open_api(page, "Ticker 1.0.0")
    await subscribe_and_get_token(page, "revoked app")
    await page.get_by_role("button", name="Try it /prices", exact=True).click()
    events = page.get_by_role("list", name="Events")
    await expect(events.get_by_role("listitem").first).to_be_visible(timeout=WAIT_MS)
    await block_and_see_revoked(page, demo, client_id)
