"""A token never validates again once its application is deleted (CONTRACT §4c, issue 12
D5): not when an application with the same client id is created later, and not when the
config re-seeds a deleted application at restart.

A valid token on an API its application is not subscribed to gets 403; a token that is
no longer valid gets 401. Real gateway processes, real HTTP clients.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.helpers import HTTP_TIMEOUT, fetch_token, get
from tests.e2e.servers import running_server, state_url

ADMIN = "admin-token-for-tokens-0123456789"
SEEDED_SECRET = "seeded-secret-0001"


def config(directory: Path) -> dict[str, Any]:
    return {
        "gateway": {"state": state_url(directory), "admin_token": ADMIN},
        "brokers": {"mem": {"type": "memory"}},
        "tiers": {"Free": {}},
        "apis": [
            {
                "name": "Feed",
                "version": "1",
                "context": "/feed",
                "broker": "mem",
                "topics": [{"name": "/t", "channel": "feed"}],
            }
        ],
        "applications": [{"name": "seeded", "client_id": "seeded", "client_secret": SEEDED_SECRET}],
    }


async def status_with(base: str, token: str) -> int:
    """403 (not subscribed) while the token is valid, 401 once it is not."""
    return (await get(base, "/feed/1/t", token)).status_code


async def test_a_recreated_client_id_does_not_revive_old_tokens(tmp_path: Path) -> None:
    client_id = f"x-{uuid.uuid4().hex[:8]}"
    with running_server(tmp_path, config(tmp_path)) as server:
        base = server.base_url
        async with httpx.AsyncClient(
            base_url=f"{base}/api/v1",
            headers={"Authorization": f"Bearer {ADMIN}"},
            timeout=HTTP_TIMEOUT,
        ) as admin:
            created = await admin.post("/applications", json={"name": "x", "client_id": client_id})
            assert created.status_code == 201, created.text
            token = await fetch_token(base, client_id, created.json()["client_secret"])
            assert await status_with(base, token) == 403
            assert (await admin.delete(f"/applications/{client_id}")).status_code == 204
            assert await status_with(base, token) == 401
            again = await admin.post("/applications", json={"name": "x", "client_id": client_id})
            assert again.status_code == 201, again.text
            assert await status_with(base, token) == 401  # the old token stays dead
            fresh = await fetch_token(base, client_id, again.json()["client_secret"])
            assert await status_with(base, fresh) == 403


async def test_a_deleted_seeded_application_re_seeded_at_restart_does_not_revive_old_tokens(
    tmp_path: Path,
) -> None:
    with running_server(tmp_path, config(tmp_path)) as server:
        token = await fetch_token(server.base_url, "seeded", SEEDED_SECRET)
        assert await status_with(server.base_url, token) == 403
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
            deleted = await client.delete(
                f"{server.base_url}/api/v1/applications/seeded",
                headers={"Authorization": f"Bearer {ADMIN}"},
            )
        assert deleted.status_code == 204
    with running_server(tmp_path, config(tmp_path)) as server:  # the config seeds it again
        assert await status_with(server.base_url, token) == 401
        fresh = await fetch_token(server.base_url, "seeded", SEEDED_SECRET)
        assert await status_with(server.base_url, fresh) == 403
