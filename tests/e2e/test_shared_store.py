"""Two gateway processes on one PostgreSQL store see each other's changes within 5 s.

Both are real ``streambridge serve`` processes with the same ``gateway.state`` URL (a
fresh database of the PostgreSQL that ``make test`` starts). A change made through one
gateway's management API must reach the other: new objects become usable there, and a
blocked subscription ends the stream open on the other gateway. Failed portal sign-ins
count on both.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.helpers import (
    HTTP_TIMEOUT,
    eventually,
    fetch_token,
    get,
    publisher,
    sse_stream,
    token_response,
)
from tests.e2e.servers import Server, running_server
from tests.e2e.test_management import Admin, base_config, sse_api, unique
from tests.store.helpers import postgres_database

PROPAGATION = 5.0  # CONTRACT/issue: within 5 s


@pytest.fixture(scope="module")
def gateways(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    with postgres_database() as url:
        config = base_config(tmp_path_factory.mktemp("shared"))
        config["gateway"]["state"] = url
        first_dir: Path = tmp_path_factory.mktemp("gateway-a")
        second_dir: Path = tmp_path_factory.mktemp("gateway-b")
        with running_server(first_dir, config) as a, running_server(second_dir, config) as b:
            yield a, b


async def test_a_change_on_one_gateway_applies_on_the_other(
    gateways: tuple[Server, Server],
) -> None:
    a, b = gateways
    admin_a, admin_b = Admin(a.base_url), Admin(b.base_url)
    try:
        name = unique("Shared")
        await admin_a.ok("POST", "/apis", 201, json=sse_api(name))
        await admin_a.ok("POST", f"/apis/{name}/1/lifecycle", json={"action": "publish"})
        app = await admin_a.ok("POST", "/applications", 201, json={"name": "shared"})
        sub = await admin_a.ok(
            "POST",
            "/subscriptions",
            201,
            json={"application": app["client_id"], "api": name, "version": "1", "tier": "Gold"},
        )
        # B answers with what A created: the application can get a token there and stream.
        path = f"/{name.lower()}/1/t/{unique('c')}"
        channel = path.rsplit("/", 1)[1]
        token = await _eventually_streams(b, path, app["client_id"], app["client_secret"])
        inject = await fetch_token(b.base_url, "injector", "injector-secret-01")
        async with sse_stream(b.base_url, path, token) as stream:
            async with publisher(b.ws_url, f"/inject/1/{channel}", inject) as pub:
                await pub.send({"via": "b"})
            event = await stream.next_event()
            assert event is not None and json.loads(event.data) == {"via": "b"}
            # Blocking on A ends the stream open on B within 5 s.
            await admin_a.ok("POST", f"/subscriptions/{sub['id']}/block")
            rest = await stream.rest(timeout=PROPAGATION + 1.5)
        assert [e.event for e in rest] == ["revoked"]
        assert (await get(b.base_url, path, token)).status_code == 403
        # Unblocking on B reaches A; both sign with the one key in the store, so a token
        # from A streams on A and on B.
        await admin_b.ok("POST", f"/subscriptions/{sub['id']}/unblock")

        async def streams_on_a() -> bool:
            token_a = await fetch_token(a.base_url, app["client_id"], app["client_secret"])
            return (await get(a.base_url, path, token_a)).status_code == 200

        await eventually(streams_on_a, timeout=PROPAGATION, what="unblock visible on A")
        token_a = await fetch_token(a.base_url, app["client_id"], app["client_secret"])
        assert (await get(b.base_url, path, token_a)).status_code == 200
    finally:
        await admin_a.client.aclose()
        await admin_b.client.aclose()


async def _eventually_streams(server: Server, path: str, client_id: str, secret: str) -> str:
    """A token from ``server`` that streams ``path``. A token is taken anew each time: one
    issued while the server knew the application but not yet its subscription carries
    none of the API's scopes (scopes are granted at issue), and never will."""
    answers: list[str] = []

    async def attempt() -> str | None:
        response = await token_response(server.base_url, client_id, secret)
        if response.status_code != 200:
            answers.append(f"token: {response.status_code} {response.text[:200]}")
            return None
        token = str(response.json()["access_token"])
        async with (
            httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client,
            client.stream(
                "GET", server.base_url + path, headers={"Authorization": f"Bearer {token}"}
            ) as stream,
        ):
            if stream.status_code == 200:
                return token
            answers.append(f"stream: {stream.status_code} {(await stream.aread())[:200]!r}")
            return None

    try:
        return await eventually(attempt, timeout=PROPAGATION, what="subscription visible on B")
    except pytest.fail.Exception:
        pytest.fail(f"B's answers, first and last: {answers[:1] + answers[-1:]}")


async def test_failed_portal_sign_ins_count_on_every_gateway(
    gateways: tuple[Server, Server],
) -> None:
    """The portal's limit (10 failures a minute per username or address, CONTRACT §12)
    is counted in the store: spreading guesses over the gateways gains nothing."""
    a, b = gateways
    guess = {"username": unique("nobody"), "password": "not-it"}
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
        for n in range(10):
            gateway = (a, b)[n % 2]
            answer = await client.post(f"{gateway.base_url}/portal/api/signin", json=guess)
            assert answer.status_code == 401, answer.text
        for gateway in (a, b):
            answer = await client.post(f"{gateway.base_url}/portal/api/signin", json=guess)
            assert answer.status_code == 429, answer.text
            assert int(answer.headers["retry-after"]) > 0
