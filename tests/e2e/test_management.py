"""CONTRACT §8 end to end: the management API changes a running gateway, live.

One gateway per module with its own state store; every test makes its own APIs and
applications (unique names), so tests do not depend on each other's order.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e.helpers import (
    HTTP_TIMEOUT,
    assert_problem,
    fetch_token,
    frames_until_closed,
    get,
    publisher,
    sse_stream,
    ws_connect,
)
from tests.e2e.servers import Server, running_server, state_url

ADMIN = "admin-token-for-e2e-0123456789"
REVOKE_WITHIN = 5.0 + 1.5  # CONTRACT: within 5 s; 1.5 s slack for the test's own reads


def base_config(directory: Path) -> dict[str, Any]:
    return {
        "gateway": {"state": state_url(directory), "admin_token": ADMIN, "heartbeat": "1s"},
        "brokers": {"mem": {"type": "memory"}},
        "tiers": {"Gold": {"max_connections": 20}, "Bronze": {"max_connections": 1}},
        "apis": [
            {
                "name": "Inject",
                "version": "1",
                "context": "/inject",
                "protocol": "websocket",
                "broker": "mem",
                "topics": [{"name": "/{ch}", "mode": "publish", "channel": "{ch}"}],
            }
        ],
        "applications": [
            {
                "name": "injector",
                "client_id": "injector",
                "client_secret": "injector-secret-01",
                "subscriptions": [{"api": "Inject", "version": "1", "tier": "Gold"}],
            }
        ],
    }


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("management")


@pytest.fixture(scope="module")
def gateway(directory: Path) -> Iterator[Server]:
    with running_server(directory, base_config(directory)) as server:
        yield server


class Admin:
    def __init__(self, base: str) -> None:
        self.client = httpx.AsyncClient(
            base_url=base + "/api/v1",
            headers={"Authorization": f"Bearer {ADMIN}"},
            timeout=HTTP_TIMEOUT,
        )

    async def ok(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        response = await self.client.request(method, path, **kwargs)
        assert response.status_code == status, (method, path, response.status_code, response.text)
        return response.json() if response.content else None


@pytest.fixture
async def admin(gateway: Server) -> AsyncIterator[Admin]:
    client = Admin(gateway.base_url)
    try:
        yield client
    finally:
        await client.client.aclose()


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def sse_api(
    name: str, *, tiers: list[str] | None = None, scopes: list[str] | None = None
) -> dict[str, Any]:
    return {
        "name": name,
        "version": "1",
        "context": f"/{name.lower()}",
        "protocol": "sse",
        "broker": "mem",
        "tiers": tiers or ["Gold", "Bronze"],
        "topics": [
            {"name": "/t/{ch}", "channel": "{ch}", "scopes": scopes or [f"{name.lower()}:read"]}
        ],
    }


async def published_api_with_app(admin: Admin, base: str) -> tuple[str, str, str, str]:
    """A PUBLISHED SSE API and an application subscribed to it.

    Returns (api name, client id, client secret, subscription id).
    """
    name = unique("Api")
    await admin.ok("POST", "/apis", 201, json=sse_api(name))
    await admin.ok("POST", f"/apis/{name}/1/lifecycle", json={"action": "publish"})
    app = await admin.ok("POST", "/applications", 201, json={"name": unique("app")})
    sub = await admin.ok(
        "POST",
        "/subscriptions",
        201,
        json={"application": app["client_id"], "api": name, "version": "1", "tier": "Gold"},
    )
    return name, app["client_id"], app["client_secret"], sub["id"]


async def injector_token(base: str) -> str:
    return await fetch_token(base, "injector", "injector-secret-01")


# --- the admin token ------------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {ADMIN}"])
async def test_admin_token_is_required(gateway: Server, header: str | None) -> None:
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
        headers = {"Authorization": header} if header else {}
        response = await client.get(gateway.base_url + "/api/v1/apis", headers=headers)
    assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_openapi_is_served(gateway: Server) -> None:
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
        docs = await client.get(gateway.base_url + "/docs")
        spec = await client.get(gateway.base_url + "/openapi.json")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert "/api/v1/apis/{name}/{version}/lifecycle" in spec.json()["paths"]


# --- APIs and lifecycle --------------------------------------------------------------------


async def test_api_crud_same_shape_as_config(admin: Admin) -> None:
    name = unique("Crud")
    created = await admin.ok("POST", "/apis", 201, json=sse_api(name))
    assert created["state"] == "CREATED"
    assert created["topics"][0]["name"] == "/t/{ch}"
    assert (await admin.ok("GET", f"/apis/{name}/1"))["context"] == f"/{name.lower()}"
    assert name in [a["name"] for a in await admin.ok("GET", "/apis")]
    changed = sse_api(name) | {"description": "updated"}
    assert (await admin.ok("PUT", f"/apis/{name}/1", json=changed))["description"] == "updated"
    await admin.ok("POST", "/apis", 409, json=sse_api(name))
    await admin.ok("DELETE", f"/apis/{name}/1", 204)
    await admin.ok("GET", f"/apis/{name}/1", 404)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"broker": "nope"}, "body.broker"),
        ({"tiers": ["Platinum"]}, "body.tiers[0]"),
        (
            {"topics": [{"name": "/x", "channel": "x", "pipeline": [{"filter": "data >"}]}]},
            "body.topics[0].pipeline[0].filter",
        ),
        ({"context": "/api/v1/clash"}, "body.context"),
        ({"unknown": 1}, "body.unknown"),
    ],
)
async def test_bad_api_bodies_get_422_naming_the_field(
    admin: Admin, change: dict[str, Any], field: str
) -> None:
    response = await admin.client.post("/apis", json=sse_api(unique("Bad")) | change)
    body = assert_problem(response, 422)
    assert field in [e["field"] for e in body["errors"]], body


async def test_lifecycle_state_machine(admin: Admin, gateway: Server) -> None:
    name = unique("Life")
    await admin.ok("POST", "/apis", 201, json=sse_api(name))
    conflict = await admin.client.post(f"/apis/{name}/1/lifecycle", json={"action": "deprecate"})
    assert_problem(conflict, 409)
    for action, state in [
        ("publish", "PUBLISHED"),
        ("block", "BLOCKED"),
        ("unblock", "PUBLISHED"),
        ("deprecate", "DEPRECATED"),
        ("retire", "RETIRED"),
    ]:
        body = await admin.ok("POST", f"/apis/{name}/1/lifecycle", json={"action": action})
        assert body["state"] == state
    final = await admin.client.post(f"/apis/{name}/1/lifecycle", json={"action": "publish"})
    assert_problem(final, 409)
    await admin.ok("POST", f"/apis/{name}/1/lifecycle", 422, json={"action": "explode"})


async def test_created_api_is_404_until_published(admin: Admin, gateway: Server) -> None:
    _, client_id, secret, _ = await published_api_with_app(admin, gateway.base_url)
    other = unique("Later")
    await admin.ok("POST", "/apis", 201, json=sse_api(other))
    await admin.ok(
        "POST",
        "/subscriptions",
        409,
        json={"application": client_id, "api": other, "version": "1", "tier": "Gold"},
    )
    token = await fetch_token(gateway.base_url, client_id, secret)
    assert (await get(gateway.base_url, f"/{other.lower()}/1/t/x", token)).status_code == 404
    await admin.ok("POST", f"/apis/{other}/1/lifecycle", json={"action": "publish"})
    # published now, but this app has no subscription to it: 403, no longer 404
    assert (await get(gateway.base_url, f"/{other.lower()}/1/t/x", token)).status_code == 403


# --- live effect on open streams ------------------------------------------------------------


async def _revoked_stream(gateway: Server, path: str, token: str, act: Any) -> list[Any]:
    """Open an SSE stream, deliver one event, run ``act``; return the events until close."""
    channel = path.rsplit("/", 1)[1]
    inject = await injector_token(gateway.base_url)
    async with sse_stream(gateway.base_url, path, token) as stream:
        async with publisher(gateway.ws_url, f"/inject/1/{channel}", inject) as pub:
            await pub.send({"n": 1})
        first = await stream.next_event()
        assert first is not None and json.loads(first.data) == {"n": 1}
        await act()
        rest = await stream.rest(timeout=REVOKE_WITHIN)
    return rest


@pytest.mark.parametrize(
    "how",
    ["block-subscription", "delete-subscription", "block-api", "retire-api", "regenerate-keys"],
)
async def test_changes_end_open_streams_within_5s(admin: Admin, gateway: Server, how: str) -> None:
    name, client_id, secret, sub_id = await published_api_with_app(admin, gateway.base_url)
    token = await fetch_token(gateway.base_url, client_id, secret)
    path = f"/{name.lower()}/1/t/{unique('c')}"
    actions = {
        "block-subscription": ("POST", f"/subscriptions/{sub_id}/block", 200, 403),
        "delete-subscription": ("DELETE", f"/subscriptions/{sub_id}", 204, 403),
        "block-api": ("POST", f"/apis/{name}/1/lifecycle", 200, 503),
        "retire-api": ("POST", f"/apis/{name}/1/lifecycle", 200, 404),
        "regenerate-keys": ("POST", f"/applications/{client_id}/keys", 200, 401),
    }
    method, url, status, next_status = actions[how]
    body = {"action": "block" if how == "block-api" else "retire"} if "api" in how else None

    async def act() -> None:
        await admin.ok(method, url, status, json=body)

    rest = await _revoked_stream(gateway, path, token, act)
    assert [e.event for e in rest] == ["revoked"], rest
    assert (await get(gateway.base_url, path, token)).status_code == next_status


async def test_websocket_closes_1008_when_subscription_blocked(
    admin: Admin, gateway: Server
) -> None:
    name = unique("Ws")
    api = sse_api(name) | {"protocol": "websocket"}
    await admin.ok("POST", "/apis", 201, json=api)
    await admin.ok("POST", f"/apis/{name}/1/lifecycle", json={"action": "publish"})
    app = await admin.ok("POST", "/applications", 201, json={"name": "ws"})
    sub = await admin.ok(
        "POST",
        "/subscriptions",
        201,
        json={"application": app["client_id"], "api": name, "version": "1", "tier": "Gold"},
    )
    token = await fetch_token(gateway.base_url, app["client_id"], app["client_secret"])
    async with ws_connect(gateway.ws_url, f"/{name.lower()}/1/t/x", token) as ws:
        await admin.ok("POST", f"/subscriptions/{sub['id']}/block")
        _, close = await frames_until_closed(ws, timeout=REVOKE_WITHIN)
    assert close.code == 1008


async def test_regenerated_secret_is_shown_once_and_works(admin: Admin, gateway: Server) -> None:
    _, client_id, old_secret, _ = await published_api_with_app(admin, gateway.base_url)
    listed = await admin.ok("GET", f"/applications/{client_id}")
    assert "client_secret" not in listed
    fresh = await admin.ok("POST", f"/applications/{client_id}/keys")
    assert fresh["client_secret"] != old_secret
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
        refused = await client.post(
            gateway.base_url + "/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=(client_id, old_secret),
        )
    assert refused.status_code == 401
    assert await fetch_token(gateway.base_url, client_id, fresh["client_secret"])


async def test_deprecated_api_serves_existing_subscribers_only(
    admin: Admin, gateway: Server
) -> None:
    name, client_id, secret, _ = await published_api_with_app(admin, gateway.base_url)
    await admin.ok("POST", f"/apis/{name}/1/lifecycle", json={"action": "deprecate"})
    token = await fetch_token(gateway.base_url, client_id, secret)
    async with sse_stream(gateway.base_url, f"/{name.lower()}/1/t/x", token):
        pass  # still served: sse_stream asserts 200
    newcomer = await admin.ok("POST", "/applications", 201, json={"name": "late"})
    await admin.ok(
        "POST",
        "/subscriptions",
        409,
        json={"application": newcomer["client_id"], "api": name, "version": "1", "tier": "Gold"},
    )


async def test_subscription_validation(admin: Admin, gateway: Server) -> None:
    name, client_id, _, _ = await published_api_with_app(admin, gateway.base_url)
    for body, field in [
        ({"application": "ghost", "api": name, "version": "1", "tier": "Gold"}, "body.application"),
        ({"application": client_id, "api": "Ghost", "version": "1", "tier": "Gold"}, "body.api"),
        ({"application": client_id, "api": name, "version": "1", "tier": "Tin"}, "body.tier"),
    ]:
        problem = assert_problem(await admin.client.post("/subscriptions", json=body), 422)
        assert field in [e["field"] for e in problem["errors"]]
    await admin.ok(
        "POST",
        "/subscriptions",
        409,
        json={"application": client_id, "api": name, "version": "1", "tier": "Gold"},
    )


async def test_tiers_crud_and_live_limits(admin: Admin, gateway: Server) -> None:
    tier = unique("Tier")
    await admin.ok("PUT", f"/tiers/{tier}", json={"max_connections": 1})
    # Every tier shows its delivery policy (CONTRACT §10), the default included.
    assert (await admin.ok("GET", f"/tiers/{tier}")) == {"max_connections": 1, "delivery": "all"}
    sampled = {"delivery": {"sample": {"max": 1, "per": "5s"}}}
    await admin.ok("PUT", f"/tiers/{tier}-sampled", json=sampled)
    assert (await admin.ok("GET", "/tiers"))[f"{tier}-sampled"] == sampled
    name = unique("Tiered")
    await admin.ok("POST", "/apis", 201, json=sse_api(name, tiers=[tier]))
    await admin.ok("POST", f"/apis/{name}/1/lifecycle", json={"action": "publish"})
    app = await admin.ok("POST", "/applications", 201, json={"name": "tiered"})
    await admin.ok(
        "POST",
        "/subscriptions",
        201,
        json={"application": app["client_id"], "api": name, "version": "1", "tier": tier},
    )
    token = await fetch_token(gateway.base_url, app["client_id"], app["client_secret"])
    path = f"/{name.lower()}/1/t/x"
    async with sse_stream(gateway.base_url, path, token):
        assert (await get(gateway.base_url, path, token)).status_code == 429
    await admin.ok("DELETE", f"/tiers/{tier}", 409)  # in use
    assert tier in await admin.ok("GET", "/tiers")


# --- AsyncAPI -----------------------------------------------------------------------------------


async def test_asyncapi_export_json_and_yaml_and_import_round_trip(admin: Admin) -> None:
    name = unique("Doc")
    api = sse_api(name, scopes=["doc:read", "doc:admin"]) | {"protocol": "websocket"}
    api["topics"].append(
        {"name": "/in", "mode": "publish", "channel": "doc.in", "scopes": ["doc:write"]}
    )
    await admin.ok("POST", "/apis", 201, json=api)
    document = await admin.ok("GET", f"/apis/{name}/1/asyncapi")
    assert document["asyncapi"].startswith("3.")
    response = await admin.client.get(
        f"/apis/{name}/1/asyncapi", headers={"Accept": "application/yaml"}
    )
    assert response.headers["content-type"].startswith("application/yaml")
    assert yaml.safe_load(response.text) == document
    copy = unique("Copy")
    imported = await admin.ok(
        "POST",
        "/apis/import",
        201,
        params={"broker": "mem", "name": copy, "context": f"/{copy.lower()}"},
        content=response.text,
        headers={"Content-Type": "application/yaml"},
    )
    assert imported["state"] == "CREATED"

    def topics(item: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
        return sorted(
            (t["name"], t.get("mode", "subscribe"), sorted(t.get("scopes", [])))
            for t in item["topics"]
        )

    assert topics(imported) == topics(api)


async def test_asyncapi_import_of_garbage_is_422(admin: Admin) -> None:
    response = await admin.client.post(
        "/apis/import", params={"broker": "mem"}, content=b"asyncapi: [unclosed"
    )
    body = assert_problem(response, 422)
    assert "does not parse" in body["detail"]


# --- restart -------------------------------------------------------------------------------------


async def test_everything_survives_a_restart(tmp_path: Path) -> None:
    config = base_config(tmp_path)
    with running_server(tmp_path, config) as first:
        admin = Admin(first.base_url)
        try:
            name, client_id, secret, sub_id = await published_api_with_app(admin, first.base_url)
            token = await fetch_token(first.base_url, client_id, secret)
            await admin.ok("POST", f"/subscriptions/{sub_id}/block")
        finally:
            await admin.client.aclose()
    with running_server(tmp_path, config) as second:
        admin = Admin(second.base_url)
        try:
            assert (await admin.ok("GET", f"/apis/{name}/1"))["state"] == "PUBLISHED"
            assert (await admin.ok("GET", f"/subscriptions/{sub_id}"))["state"] == "BLOCKED"
            # the signing key lives in the store: the old token still verifies (403, not 401)
            path = f"/{name.lower()}/1/t/x"
            assert (await get(second.base_url, path, token)).status_code == 403
            await admin.ok("POST", f"/subscriptions/{sub_id}/unblock")
            async with sse_stream(second.base_url, path, token):
                pass
        finally:
            await admin.client.aclose()
