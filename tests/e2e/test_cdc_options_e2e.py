"""Topic options of change streams (CONTRACT §7b) through a real gateway: ``unwrap``
(rows, deletes as ``event: delete``), ``mask`` by scope, and Debezium JSON read from a
real Kafka-protocol broker (``debezium: true``) into the same envelope."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cdc.helpers import module_database, sql
from tests.e2e import kcat
from tests.e2e.helpers import ParsedEvent, SSEReader, fetch_token, sse_stream
from tests.e2e.servers import running_server, state_url

SECRET = "cdc-options-secret-01"
KAFKA = "127.0.0.1:9092"


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with module_database(
        "CREATE TABLE customers (id int PRIMARY KEY, name text, email text)",
        "ALTER TABLE customers REPLICA IDENTITY FULL",
    ) as dsn:
        yield dsn


def config(directory: Path, dsn: str, kafka_topic: str) -> dict[str, Any]:
    mask = {"columns": ["email"], "unless_scope": "pii:read"}
    return {
        "gateway": {
            "public_url": "http://127.0.0.1:8080",
            "state": state_url(directory),
            "data_dir": str(directory / "data"),
        },
        "brokers": {
            "db": {"type": "postgres-cdc", "dsn": dsn, "slot": f"sbopt_{uuid.uuid4().hex[:16]}"},
            "kafka": {"type": "kafka", "bootstrap": KAFKA},
        },
        "tiers": {"Unlimited": {}},
        "apis": [
            {
                "name": "Crm",
                "version": "1.0.0",
                "context": "/crm",
                "broker": "db",
                "topics": [
                    {
                        "name": "/customers",
                        "channel": "public.customers",
                        "scopes": ["crm:read"],
                        "mask": mask,
                    },
                    {
                        "name": "/rows",
                        "channel": "public.customers",
                        "scopes": ["crm:read"],
                        "unwrap": True,
                        "mask": mask,
                    },
                ],
            },
            {
                "name": "Legacy",
                "version": "1.0.0",
                "context": "/legacy",
                "broker": "kafka",
                "topics": [
                    {"name": "/changes", "channel": kafka_topic, "debezium": True},
                    {
                        "name": "/rows",
                        "channel": kafka_topic,
                        "debezium": True,
                        "unwrap": True,
                        "mask": {"columns": ["email"]},
                    },
                ],
            },
        ],
        "applications": [
            {
                "name": "crm",
                "client_id": "crm",
                "client_secret": SECRET,
                "subscriptions": [
                    {"api": "Crm", "version": "1.0.0", "tier": "Unlimited"},
                    {"api": "Legacy", "version": "1.0.0", "tier": "Unlimited"},
                ],
            }
        ],
    }


async def probe_until_live(stream: SSEReader, dsn: str) -> None:
    """Insert probe rows until one comes out: the table's hub is reading."""
    received = asyncio.ensure_future(stream.next_event(timeout=20))
    probe = -1
    while not received.done():
        await sql(dsn, "INSERT INTO customers VALUES (%s, 'probe', 'probe@x')", probe)
        probe -= 1
        await asyncio.wait([received], timeout=0.3)
    assert received.result() is not None


async def real_events(stream: SSEReader, count: int) -> list[ParsedEvent]:
    out: list[ParsedEvent] = []
    while len(out) < count:
        (event,) = await stream.events(1)
        if "probe" not in event.data:
            out.append(event)
    return out


async def test_unwrap_and_mask_by_scope(database: str, tmp_path: Path) -> None:
    dsn = database
    with running_server(tmp_path, config(tmp_path, dsn, f"dbz-{uuid.uuid4().hex}")) as server:
        plain = await fetch_token(server.base_url, "crm", SECRET)  # no pii:read by default
        pii = await fetch_token(server.base_url, "crm", SECRET, scope="crm:read pii:read")
        async with (
            sse_stream(server.base_url, "/crm/1.0.0/rows", plain) as masked_rows,
            sse_stream(server.base_url, "/crm/1.0.0/rows", pii) as rows,
            sse_stream(server.base_url, "/crm/1.0.0/customers", plain) as masked_envelopes,
        ):
            await probe_until_live(masked_rows, dsn)
            await sql(dsn, "INSERT INTO customers VALUES (1, 'Ada', 'ada@example.com')")
            await sql(dsn, "DELETE FROM customers WHERE id = 1")
            masked = await real_events(masked_rows, 2)
            clear = await real_events(rows, 2)
            envelopes = await real_events(masked_envelopes, 2)

    assert [json.loads(e.data) for e in clear] == [
        {"id": 1, "name": "Ada", "email": "ada@example.com"},
        {"id": 1, "name": "Ada", "email": "ada@example.com"},
    ]
    assert [e.event for e in clear] == [None, "delete"]
    assert [json.loads(e.data) for e in masked] == [
        {"id": 1, "name": "Ada", "email": None},
        {"id": 1, "name": "Ada", "email": None},
    ]
    assert [e.event for e in masked] == [None, "delete"]
    created, deleted = (json.loads(e.data) for e in envelopes)
    assert created["op"] == "c" and created["after"]["email"] is None
    assert deleted["op"] == "d" and deleted["before"]["email"] is None
    # The same change has the same id for every client, masked or not.
    assert [e.id for e in masked] != [None, None]
    assert [e.id.partition(".")[2] for e in masked] == [  # type: ignore[union-attr]
        e.id.partition(".")[2]  # type: ignore[union-attr]
        for e in clear
    ]


def debezium(op: str, before: dict[str, Any] | None, after: dict[str, Any] | None) -> bytes:
    """A Debezium change event as Kafka Connect's JsonConverter writes it (with schema)."""
    row = {
        "type": "struct",
        "optional": True,
        "fields": [
            {"field": "id", "type": "int32", "optional": False},
            {"field": "email", "type": "string", "optional": True},
        ],
    }
    schema = {
        "type": "struct",
        "name": "server.public.customers.Envelope",
        "fields": [
            {**row, "field": "before"},
            {**row, "field": "after"},
            {"field": "op", "type": "string", "optional": False},
        ],
    }
    payload = {
        "before": before,
        "after": after,
        "op": op,
        "ts_ms": 1700000000000,
        "source": {"db": "crm", "schema": "public", "table": "customers", "lsn": 23456},
    }
    return json.dumps({"schema": schema, "payload": payload}).encode()


async def test_debezium_json_from_kafka_reads_like_a_change_stream(
    database: str, tmp_path: Path
) -> None:
    topic = f"dbz-{uuid.uuid4().hex}"

    async def produce(*values: bytes | None) -> None:
        await kcat.produce(topic, *values, key=b"7", bootstrap=KAFKA)

    await produce(debezium("c", None, {"id": 7, "email": "x@y"}))
    with running_server(tmp_path, config(tmp_path, database, topic)) as server:
        token = await fetch_token(server.base_url, "crm", SECRET)
        async with (
            sse_stream(
                server.base_url, "/legacy/1.0.0/changes", token, params={"from": "earliest"}
            ) as changes,
            sse_stream(
                server.base_url, "/legacy/1.0.0/rows", token, params={"from": "earliest"}
            ) as rows,
        ):
            first = await changes.events(1)
            # A tombstone (null value) after a delete is skipped, not an event.
            await produce(debezium("d", {"id": 7, "email": "x@y"}, None), None)
            await produce(debezium("u", None, {"id": 8, "email": "z@y"}))
            more = await changes.events(2)
            unwrapped = await rows.events(3)

    created, deleted, updated = (json.loads(e.data) for e in first + more)
    assert created == {
        "op": "c",
        "before": None,
        "after": {"id": 7, "email": "x@y"},
        "source": created["source"],
    }
    assert created["source"]["table"] == "customers" and created["source"]["ts_ms"] > 0
    assert deleted["op"] == "d" and deleted["before"] == {"id": 7, "email": "x@y"}
    assert updated["op"] == "u" and updated["after"]["id"] == 8
    assert [json.loads(e.data) for e in unwrapped] == [
        {"id": 7, "email": None},
        {"id": 7, "email": None},
        {"id": 8, "email": None},
    ]
    assert [e.event for e in unwrapped] == [None, "delete", None]
