"""Production and sandbox keys (CONTRACT §13): an application's sandbox keys reach the
sandbox endpoint; on an API without one they get 403; production keys reach production."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import jwt
import pytest
from websockets.exceptions import ConnectionClosed

from tests.e2e.endpoint_setup import ADMIN, SECRET, TICKS, endpoint_config
from tests.e2e.helpers import fetch_token, get, ws_connect, ws_refusal
from tests.e2e.servers import running_server
from tests.e2e.upstreams import echo_origin

CHAT = "/echo/1.0.0/chat"


async def test_sandbox_keys_reach_the_sandbox_endpoint_and_only_it(tmp_path: Path) -> None:
    async with echo_origin() as production, echo_origin() as sandbox:
        settings = endpoint_config(
            tmp_path, sse_url="http://127.0.0.1:9", ws_url=production.url, ws_sandbox=sandbox.url
        )
        with running_server(tmp_path, settings) as server:
            async with httpx.AsyncClient(base_url=server.base_url) as admin:
                created = await admin.post(
                    "/api/v1/applications/app/keys",
                    params={"type": "sandbox"},
                    headers={"Authorization": f"Bearer {ADMIN}"},
                )
            assert created.status_code == 200, created.text
            keys = created.json()
            assert keys["key_type"] == "SANDBOX" and keys["client_id"] != "app"
            sandbox_token = await fetch_token(
                server.base_url, keys["client_id"], keys["client_secret"]
            )
            claims = jwt.decode(sandbox_token, options={"verify_signature": False})
            assert claims["key_type"] == "SANDBOX" and claims["client_id"] == "app"
            production_token = await fetch_token(server.base_url, "app", SECRET)
            assert "key_type" not in jwt.decode(
                production_token, options={"verify_signature": False}
            )

            for token, origin in ((sandbox_token, sandbox), (production_token, production)):
                async with ws_connect(server.ws_url, CHAT, token) as ws:
                    await ws.send("where am I")
                    assert await asyncio.wait_for(ws.recv(), 5) == "where am I"
                assert len(origin.requests) == 1
            assert [r.headers["x-streambridge-application"] for r in sandbox.requests] == ["app"]

            # The SSE API has no sandbox endpoint: sandbox keys are refused there.
            refused = await get(server.base_url, TICKS, sandbox_token)
            assert refused.status_code == 403
            assert refused.json()["code"] == "no_sandbox"


async def test_sandbox_keys_on_an_api_without_a_sandbox_get_403(tmp_path: Path) -> None:
    async with echo_origin() as production:
        settings = endpoint_config(tmp_path, sse_url="http://127.0.0.1:9", ws_url=production.url)
        with running_server(tmp_path, settings) as server:
            async with httpx.AsyncClient(base_url=server.base_url) as admin:
                keys = (
                    await admin.post(
                        "/api/v1/applications/app/keys",
                        params={"type": "sandbox"},
                        headers={"Authorization": f"Bearer {ADMIN}"},
                    )
                ).json()
                listed = await admin.get(
                    "/api/v1/applications", headers={"Authorization": f"Bearer {ADMIN}"}
                )
            assert [a["client_id"] for a in listed.json()] == ["app"]
            token = await fetch_token(server.base_url, keys["client_id"], keys["client_secret"])
            response = await ws_refusal(server.ws_url, CHAT, token)
            assert response.status_code == 403
            assert production.requests == [], "no upstream attempt"


async def test_the_management_api_takes_and_gives_endpoint_apis_in_the_config_shape(
    tmp_path: Path,
) -> None:
    async with echo_origin() as production:
        settings = endpoint_config(tmp_path, sse_url="http://127.0.0.1:9", ws_url=production.url)
        with running_server(tmp_path, settings) as server:
            headers = {"Authorization": f"Bearer {ADMIN}"}
            async with httpx.AsyncClient(base_url=server.base_url, headers=headers) as admin:
                echo = (await admin.get("/api/v1/apis/Echo/1.0.0")).json()
                assert echo["endpoint"]["production"] == production.url
                assert echo["endpoint"]["suspend"] == {"after_failures": 3, "for": "30s"}
                assert "broker" not in echo
                assert echo["topics"][0]["url_mapping"] == "/echo"
                copy = {**echo, "name": "Echo2", "context": "/echo2", "state": "CREATED"}
                created = await admin.post("/api/v1/apis", json=copy)
                assert created.status_code == 201, created.text
                assert (await admin.get("/api/v1/apis/Echo2/1.0.0")).json() == {
                    **copy,
                    "state": "CREATED",
                }
                bad = {**copy, "name": "Echo3", "context": "/echo3"}
                bad["endpoint"] = {**copy["endpoint"], "production": "http://127.0.0.1:1"}
                refused = await admin.post("/api/v1/apis", json=bad)
                assert refused.status_code == 422
                assert "endpoint.production" in refused.text
                imported = await admin.post(
                    "/api/v1/apis/import",
                    params={"endpoint": production.url, "name": "Echo4", "context": "/echo4"},
                    content=(await admin.get("/api/v1/apis/Echo/1.0.0/asyncapi")).content,
                )
                assert imported.status_code == 201, imported.text
                assert imported.json()["endpoint"]["production"] == production.url
                assert [t["url_mapping"] for t in imported.json()["topics"]] == [
                    t["url_mapping"] for t in echo["topics"]
                ]


async def test_regenerated_sandbox_keys_end_the_open_sandbox_streams_only(tmp_path: Path) -> None:
    """Regenerated keys end the streams of tokens issued before (§8), sandbox keys too,
    and regenerating one kind leaves the streams of the other open (§13)."""
    async with echo_origin() as production, echo_origin() as sandbox:
        settings = endpoint_config(
            tmp_path, sse_url="http://127.0.0.1:9", ws_url=production.url, ws_sandbox=sandbox.url
        )
        with running_server(tmp_path, settings) as server:
            admin_headers = {"Authorization": f"Bearer {ADMIN}"}
            async with httpx.AsyncClient(base_url=server.base_url, headers=admin_headers) as admin:
                keys = (
                    await admin.post("/api/v1/applications/app/keys", params={"type": "sandbox"})
                ).json()
                sandbox_token = await fetch_token(
                    server.base_url, keys["client_id"], keys["client_secret"]
                )
                production_token = await fetch_token(server.base_url, "app", SECRET)
                async with (
                    ws_connect(server.ws_url, CHAT, sandbox_token) as old_sandbox,
                    ws_connect(server.ws_url, CHAT, production_token) as kept,
                ):
                    for ws in (old_sandbox, kept):
                        await ws.send("hello")
                        assert await asyncio.wait_for(ws.recv(), 5) == "hello"
                    regenerated = await admin.post(
                        "/api/v1/applications/app/keys", params={"type": "sandbox"}
                    )
                    assert regenerated.status_code == 200, regenerated.text
                    with pytest.raises(ConnectionClosed) as closed:
                        await asyncio.wait_for(old_sandbox.recv(), 10)
                    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
                    await kept.send("still here")
                    assert await asyncio.wait_for(kept.recv(), 5) == "still here"
