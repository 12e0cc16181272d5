"""``snapshot: true`` (CONTRACT §7b): a table's rows, then its changes, with nothing lost or
doubled at the seam while a writer keeps changing the table during the snapshot."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from bridge.event import Event
from connectors.base import EARLIEST
from tests.cdc.helpers import DEADLINE, cdc_connector, closing, sql, take_events


async def _writer(dsn: str, stop: asyncio.Event, written: list[int]) -> None:
    """Inserts, updates and deletes, each its own transaction, until ``stop``."""
    for n in itertools.count(1000):
        if stop.is_set():
            return
        await sql(dsn, "INSERT INTO items VALUES (%s, 0)", n)
        await sql(dsn, "UPDATE items SET v = v + 1 WHERE id = %s", n % 200)
        await sql(dsn, "DELETE FROM items WHERE id = %s", n - 5)
        written.append(n)


async def test_rows_and_the_changes_after_the_boundary_are_the_table_exactly(dsn: str) -> None:
    await sql(dsn, "CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL)")
    await sql(dsn, "INSERT INTO items SELECT g, 0 FROM generate_series(0, 199) g")
    async with cdc_connector(dsn, retain=100_000) as connector:
        # What the gateway does: attach to the live feed first, then take the snapshot.
        live_from = await connector.position("items")
        stop, written = asyncio.Event(), list[int]()
        writer = asyncio.create_task(_writer(dsn, stop, written))
        try:
            async with asyncio.timeout(DEADLINE):
                while len(written) < 5:  # changes before the boundary
                    await asyncio.sleep(0.01)
            boundary, rows = await connector.snapshot("items")
            table: dict[int, dict[str, Any]] = {}
            written_at_boundary = len(written)
            async for row in rows:
                assert row.data["op"] == "r" and row.cursor is None
                assert row.data["source"]["snapshot"] is True
                table[row.data["after"]["id"]] = row.data["after"]
                if len(table) % 20 == 0:
                    await asyncio.sleep(0.02)  # the writer goes on meanwhile
            async with asyncio.timeout(DEADLINE):
                while len(written) < written_at_boundary + 5:  # changes after it
                    await asyncio.sleep(0.01)
        finally:
            stop.set()
            await writer
        until = await connector.position("items")  # everything written is in the log now
        assert until is not None

        changes: list[Event] = []
        async with closing(connector.subscribe("items", live_from)) as stream:
            while not changes or changes[-1].cursor != until:
                changes += await take_events(stream, 1)

    after = [c for c in changes if connector.is_after(c.cursor or "", boundary)]
    before = [c for c in changes if not connector.is_after(c.cursor or "", boundary)]
    assert before, "no change fell before the boundary: the seam was not exercised"
    assert after, "no change came after the boundary: the seam was not exercised"
    assert all(connector.is_after(c.cursor or "", boundary) for c in changes[len(before) :])
    for change in after:
        envelope = change.data
        if envelope["op"] == "c":
            assert envelope["after"]["id"] not in table, f"doubled: {envelope}"
            table[envelope["after"]["id"]] = envelope["after"]
        elif envelope["op"] == "u":
            assert envelope["after"]["id"] in table, f"lost: {envelope}"
            table[envelope["after"]["id"]] = envelope["after"]
        else:
            assert envelope["op"] == "d"
            assert table.pop(envelope["before"]["id"], None) is not None, f"lost: {envelope}"
    current = await sql(dsn, "SELECT id, v FROM items")
    assert table == {i: {"id": i, "v": v} for i, v in current}


async def test_a_snapshot_of_an_empty_table_and_an_abandoned_one(dsn: str) -> None:
    await sql(dsn, "CREATE TABLE empty (id int PRIMARY KEY)")
    await sql(dsn, "CREATE TABLE full_ (id int PRIMARY KEY, doc jsonb, n numeric)")
    await sql(dsn, """INSERT INTO full_ VALUES (1, '{"a": 1}', 1.50), (2, NULL, NULL)""")
    async with cdc_connector(dsn) as connector:
        _, rows = await connector.snapshot("public.empty")
        assert [row async for row in rows] == []
        _, rows = await connector.snapshot("full_")
        first = await anext(rows)
        assert first.data["after"] == {"id": 1, "doc": {"a": 1}, "n": "1.50"}
        assert first.key == '{"id":1}'
        assert first.channel == "public.full_"
        await rows.aclose()  # gives its connection back without reading the rest
        await rows.aclose()
        slots = await sql(dsn, "SELECT count(*) FROM pg_replication_slots WHERE temporary")
        assert slots == [(0,)]


ODD_TYPES = """
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE TABLE odd (
    id int PRIMARY KEY, m money, tz timetz, r int4range, ip inet, feel mood, x xml,
    p point, bits bit(3), n numeric, nums numeric[], f real, d double precision,
    c char(3), stamps timestamptz[], docs jsonb[], big bigint, u uuid, t text
);
INSERT INTO odd VALUES
    (1, 12.5, '10:11:12+02', '[1,5)', '10.0.0.1', 'happy', '<a>b</a>', '(1,2)', B'101',
     'NaN', '{1.50,NULL}', 'Infinity', '-1.5e-10', 'ab', '{"2024-01-02 03:04:05+00"}',
     ARRAY['{"k": [1]}'::jsonb], -9223372036854775808, gen_random_uuid(), E'line\\nbreak "q"'),
    (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
     NULL, NULL, NULL, NULL);
"""


async def test_a_snapshot_row_and_a_change_of_the_same_values_look_the_same(dsn: str) -> None:
    """The two paths read values differently (wal2json's JSON; ``::text`` columns), and
    map them to the same JSON."""
    async with cdc_connector(dsn) as connector:
        await sql(dsn, ODD_TYPES.split("INSERT")[0])
        await connector.watch("odd")
        await sql(dsn, "INSERT" + ODD_TYPES.split("INSERT")[1])
        async with closing(connector.subscribe("odd", EARLIEST)) as stream:
            changes = [e.data["after"] for e in await take_events(stream, 2)]
        _, rows = await connector.snapshot("odd")
        snapshot = [row.data["after"] async for row in rows]
    assert sorted(snapshot, key=lambda r: r["id"]) == changes
    first = changes[0]
    assert first["m"] == "$12.50"
    assert (first["tz"], first["r"], first["ip"], first["feel"]) == (
        "10:11:12+02:00",
        "[1,5)",
        "10.0.0.1",
        "happy",
    )
    assert (first["n"], first["nums"], first["f"], first["d"]) == (
        None,
        ["1.50", None],
        None,
        -1.5e-10,
    )
    assert first["stamps"] == ["2024-01-02T03:04:05+00:00"]
    assert first["docs"] == [{"k": [1]}]
    assert first["big"] == -9223372036854775808
    assert first["t"] == 'line\nbreak "q"'
    assert first["c"] == "ab "
    assert set(changes[1].values()) == {None, 2}
