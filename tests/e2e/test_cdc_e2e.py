"""Postgres CDC end to end (CONTRACT §7b): a real gateway serving a table as SSE, real
inserts, updates and deletes, and an exact resume by Last-Event-ID across a restart, on
SSE and on the WebSocket ``streambridge.v1`` subprotocol."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from websockets.asyncio.client import ClientConnection

from tests.cdc.helpers import module_database, sql
from tests.e2e.helpers import eventually, fetch_token, get, sse_stream, ws_connect
from tests.e2e.servers import Server, running_server, state_url

SECRET = "cdc-secret-000001"


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with module_database(
        "CREATE TABLE orders (id int PRIMARY KEY, amount numeric, note text)",
        "CREATE TABLE stock (sku text PRIMARY KEY, level int)",
    ) as dsn:
        yield dsn


def cdc_config(
    directory: Path, dsn: str, slot: str, *extra_topics: dict[str, Any]
) -> dict[str, Any]:
    return {
        "gateway": {
            "public_url": "http://127.0.0.1:8080",
            "state": state_url(directory),
            "data_dir": str(directory / "data"),
        },
        "brokers": {"db": {"type": "postgres-cdc", "dsn": dsn, "slot": slot}},
        "tiers": {"Unlimited": {}},
        "apis": [
            {
                "name": "Shop",
                "version": "1.0.0",
                "context": "/shop",
                "protocol": "sse",
                "broker": "db",
                "topics": [
                    {"name": "/orders", "channel": "public.orders"},
                    {"name": "/stock", "channel": "public.stock", "snapshot": True},
                    *extra_topics,
                ],
            }
        ],
        "applications": [
            {
                "name": "shop",
                "client_id": "shop",
                "client_secret": SECRET,
                "subscriptions": [{"api": "Shop", "version": "1.0.0", "tier": "Unlimited"}],
            }
        ],
    }


async def _changes(server: Server, dsn: str, token: str) -> list[tuple[str, Any]]:
    """Insert, update and delete a row while a client streams the table: (id, envelope)
    of each. The hub starts with the first client, so probe rows are inserted until the
    stream delivers one; probes are left out of the result."""
    async with sse_stream(server.base_url, "/shop/1.0.0/orders", token) as stream:
        received = asyncio.ensure_future(stream.next_event(timeout=20))
        probe = -1
        while not received.done():
            await sql(dsn, "INSERT INTO orders VALUES (%s, 0, 'probe')", probe)
            probe -= 1
            await asyncio.wait([received], timeout=0.3)
        assert received.result() is not None
        await sql(dsn, "INSERT INTO orders VALUES (1, 12.50, 'new')")
        await sql(dsn, "UPDATE orders SET note = 'paid' WHERE id = 1")
        await sql(dsn, "DELETE FROM orders WHERE id = 1")
        changes: list[tuple[str, Any]] = []
        while len(changes) < 3:
            (event,) = await stream.events(1)
            envelope = json.loads(event.data)
            if (envelope["after"] or {}).get("note") != "probe":
                changes.append((event.id or "", envelope))
    return changes


def _cursor(event_id: str) -> str:
    """The connector cursor an SSE id carries (after the hub's part, if any)."""
    return event_id.partition(".")[2]


async def test_changes_are_served_as_sse_and_resume_exactly_after_a_restart(
    database: str, tmp_path: Path
) -> None:
    dsn = database
    config = cdc_config(tmp_path, dsn, f"sbtest_{uuid.uuid4().hex[:16]}")
    with running_server(tmp_path, config) as server:
        token = await fetch_token(server.base_url, "shop", SECRET)
        changes = await _changes(server, dsn, token)
        ready = await get(server.base_url, "/readyz")
        assert ready.status_code == 200, ready.text

    assert [env["op"] for _, env in changes] == ["c", "u", "d"]
    (_, created), (_, updated), (_, deleted) = changes
    assert created["after"] == {"id": 1, "amount": "12.50", "note": "new"}
    assert created["source"]["table"] == "orders" and created["source"]["schema"] == "public"
    assert updated["before"] == {"id": 1}
    assert updated["after"] == {"id": 1, "amount": "12.50", "note": "paid"}
    assert deleted["before"] == {"id": 1} and deleted["after"] is None

    # While the gateway is down the table changes; the client resumes after the insert.
    await sql(dsn, "INSERT INTO orders VALUES (2, 3, 'while down')")
    first_id = changes[0][0]
    with running_server(tmp_path, config) as server:
        token = await fetch_token(server.base_url, "shop", SECRET)
        async with sse_stream(
            server.base_url, "/shop/1.0.0/orders", token, headers={"Last-Event-ID": first_id}
        ) as stream:
            resumed = await stream.events(3)
    assert [json.loads(e.data)["op"] for e in resumed] == ["u", "d", "c"]
    # The same changes, named by the same LSN cursors (the hub part of an id is per run).
    assert [_cursor(e.id or "") for e in resumed[:2]] == [_cursor(i) for i, _ in changes[1:]]
    assert json.loads(resumed[2].data)["after"] == {"id": 2, "amount": "3", "note": "while down"}


async def test_a_snapshot_topic_starts_with_the_rows_then_the_changes(
    database: str, tmp_path: Path
) -> None:
    dsn = database
    await sql(dsn, "INSERT INTO stock VALUES ('a', 1), ('b', 2)")
    config = cdc_config(tmp_path, dsn, f"sbtest_{uuid.uuid4().hex[:16]}")
    with running_server(tmp_path, config) as server:
        token = await fetch_token(server.base_url, "shop", SECRET)
        async with sse_stream(server.base_url, "/shop/1.0.0/stock", token) as stream:
            rows = [json.loads(e.data) for e in await stream.events(2)]
            assert [r["op"] for r in rows] == ["r", "r"]
            assert sorted(r["after"]["sku"] for r in rows) == ["a", "b"]
            await sql(dsn, "INSERT INTO stock VALUES ('c', 3)")
            await sql(dsn, "UPDATE stock SET level = 0 WHERE sku = 'a'")
            changes = [json.loads(e.data) for e in await stream.events(2)]
    assert [(c["op"], c["after"]) for c in changes] == [
        ("c", {"sku": "c", "level": 3}),
        ("u", {"sku": "a", "level": 0}),
    ]


async def test_a_missing_table_makes_readyz_503_until_it_exists(
    database: str, tmp_path: Path
) -> None:
    dsn = database
    later = {"name": "/later", "channel": "public.later"}
    config = cdc_config(tmp_path, dsn, f"sbtest_{uuid.uuid4().hex[:16]}", later)
    with running_server(tmp_path, config) as server:
        token = await fetch_token(server.base_url, "shop", SECRET)
        async with sse_stream(server.base_url, "/shop/1.0.0/later", token) as stream:

            async def unready() -> dict[str, Any] | None:
                response = await get(server.base_url, "/readyz")
                return response.json() if response.status_code == 503 else None

            body = await eventually(unready, what="/readyz 503")
            assert body["checks"]["broker:db"] is False
            assert "table does not exist broker=db table=public.later" in server.stderr()

            await sql(dsn, "CREATE TABLE later (id int PRIMARY KEY)")

            async def ready() -> bool:
                return (await get(server.base_url, "/readyz")).status_code == 200

            await eventually(ready, timeout=30, what="/readyz 200 once the table exists")
            await sql(dsn, "INSERT INTO later VALUES (1)")
            (event,) = await stream.events(1, timeout=30)
            assert json.loads(event.data)["after"] == {"id": 1}


async def test_a_v1_websocket_resumes_exactly_after_a_restart(
    database: str, tmp_path: Path
) -> None:
    """CONTRACT §6: ``?last_event_id=`` on a ``streambridge.v1`` WebSocket resumes a CDC
    topic as SSE does, from the LSN, also after a gateway restart."""
    dsn = database
    config = cdc_config(tmp_path, dsn, f"sbtest_{uuid.uuid4().hex[:16]}")
    ws_api = {**config["apis"][0], "name": "ShopWs", "context": "/shopws", "protocol": "websocket"}
    config["apis"].append(ws_api)
    subscription = {"api": "ShopWs", "version": "1.0.0", "tier": "Unlimited"}
    config["applications"][0]["subscriptions"].append(subscription)
    path = "/shopws/1.0.0/orders"

    async def frame(ws: ClientConnection) -> dict[str, Any]:
        parsed = json.loads(await asyncio.wait_for(ws.recv(), 20))
        assert isinstance(parsed, dict) and "id" in parsed, parsed
        return parsed

    with running_server(tmp_path, config) as server:
        token = await fetch_token(server.base_url, "shop", SECRET)
        async with ws_connect(server.ws_url, path, token, subprotocols=["streambridge.v1"]) as ws:
            received = asyncio.ensure_future(frame(ws))
            probe = -1000  # rows of its own: the module's other tests probe from -1 down
            while not received.done():
                await sql(dsn, "INSERT INTO orders VALUES (%s, 0, 'probe')", probe)
                probe -= 1
                await asyncio.wait([received], timeout=0.3)
            await sql(dsn, "INSERT INTO orders VALUES (10, 1, 'v1')")
            await sql(dsn, "UPDATE orders SET note = 'v1 paid' WHERE id = 10")
            frames: list[dict[str, Any]] = []
            while len(frames) < 2:
                got = await frame(ws)
                if (got["data"]["after"] or {}).get("note") != "probe":
                    frames.append(got)
    assert [f["data"]["op"] for f in frames] == ["c", "u"]
    await sql(dsn, "INSERT INTO orders VALUES (11, 2, 'v1 while down')")
    with running_server(tmp_path, config) as server:
        token = await fetch_token(server.base_url, "shop", SECRET)
        resume = f"{path}?last_event_id={quote(frames[0]['id'])}"
        async with ws_connect(server.ws_url, resume, token, subprotocols=["streambridge.v1"]) as ws:
            resumed = [await frame(ws) for _ in range(2)]
    assert [(f["data"]["op"], f["data"]["after"]["note"]) for f in resumed] == [
        ("u", "v1 paid"),
        ("c", "v1 while down"),
    ], "exactly after the id, across a restart"
    assert _cursor(resumed[0]["id"]) == _cursor(frames[1]["id"])
