"""The postgres-cdc connector against the real PostgreSQL (CONTRACT §7b): inserts, updates
and deletes as c/u/d envelopes with their JSON types, exact resume by cursor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.errors import ConnectorError
from bridge.event import Event
from connectors.base import EARLIEST
from connectors.postgres.changes import parse_cursor
from connectors.postgres.slot import Slot
from connectors.replay import log_path
from tests.cdc.helpers import cdc_connector, closing, new_slot, nothing_more, sql, take_events

TYPES_TABLE = """
CREATE TABLE public.things (
    id integer PRIMARY KEY,
    amount numeric(10, 2),
    ratio double precision,
    big bigint,
    flag boolean,
    created timestamptz,
    local timestamp,
    day date,
    at time,
    span interval,
    raw bytea,
    doc jsonb,
    plain json,
    tags text[],
    counts integer[],
    note text,
    ident uuid
)
"""

INSERT = """
INSERT INTO public.things VALUES (
    1, 12.50, 0.25, 9007199254740993, true, '2024-01-02 03:04:05.5+02', '2024-01-02 03:04:05',
    '2024-01-02', '10:11:12', '1 day 2 hours', '\\x00ff', '{"a": [1, 2.5]}', '[true]',
    '{"a b", NULL}', '{1,2}', 'grüße', 'e08ab4dc-3dc1-4630-8c16-ac76c54ed27c'
)
"""

ROW = {
    "id": 1,
    "amount": "12.50",
    "ratio": 0.25,
    "big": 9007199254740993,
    "flag": True,
    "created": "2024-01-02T01:04:05.5+00:00",
    "local": "2024-01-02T03:04:05",
    "day": "2024-01-02",
    "at": "10:11:12",
    "span": "P1DT2H",
    "raw": "AP8=",
    "doc": {"a": [1, 2.5]},
    "plain": [True],
    "tags": ["a b", None],
    "counts": [1, 2],
    "note": "grüße",
    "ident": "e08ab4dc-3dc1-4630-8c16-ac76c54ed27c",
}
NULLS = dict.fromkeys(ROW, None) | {"id": 2}


async def test_insert_update_delete_are_c_u_d_envelopes_with_json_types(dsn: str) -> None:
    await sql(dsn, TYPES_TABLE)
    async with cdc_connector(dsn) as connector:
        await connector.watch("public.things")  # captured from here on
        await sql(dsn, INSERT)
        await sql(dsn, "INSERT INTO public.things (id) VALUES (2)")
        await sql(dsn, "UPDATE public.things SET note = 'changed', amount = NULL WHERE id = 1")
        await sql(dsn, "DELETE FROM public.things WHERE id = 2")
        async with closing(connector.subscribe("public.things", EARLIEST)) as stream:
            inserted, nulls, updated, deleted = await take_events(stream, 4)
        assert await connector.ready()

    assert inserted.data["op"] == "c"
    assert inserted.data["before"] is None
    assert inserted.data["after"] == ROW
    source = inserted.data["source"]
    assert (source["schema"], source["table"], source["db"]) == (
        "public",
        "things",
        dsn.rsplit("/", 1)[1],
    )
    assert isinstance(source["ts_ms"], int) and isinstance(source["txId"], int)
    assert parse_cursor(inserted.cursor or "") is not None
    assert inserted.channel == "public.things"
    assert json.loads(inserted.key or "") == {"id": 1}

    assert nulls.data["after"] == NULLS
    # Default replica identity: ``before`` holds the primary key only.
    assert updated.data["op"] == "u"
    assert updated.data["before"] == {"id": 1}
    assert updated.data["after"] == ROW | {"note": "changed", "amount": None}
    assert deleted.data == {
        "op": "d",
        "before": {"id": 2},
        "after": None,
        "source": deleted.data["source"],
    }
    cursors = [e.cursor or "" for e in (inserted, nulls, updated, deleted)]
    assert cursors == sorted(cursors) and len(set(cursors)) == 4


async def test_replica_identity_full_gives_the_whole_old_row(dsn: str) -> None:
    await sql(dsn, "CREATE TABLE people (id int PRIMARY KEY, email text, name text)")
    await sql(dsn, "ALTER TABLE people REPLICA IDENTITY FULL")
    await sql(dsn, "INSERT INTO people VALUES (1, 'a@example.com', 'A')")
    async with cdc_connector(dsn) as connector:
        await connector.watch("people")
        await sql(dsn, "UPDATE people SET name = 'B' WHERE id = 1")
        await sql(dsn, "DELETE FROM people")
        async with closing(connector.subscribe("people", EARLIEST)) as stream:
            updated, deleted = await take_events(stream, 2)
    old = {"id": 1, "email": "a@example.com", "name": "A"}
    assert (updated.data["before"], updated.data["after"]) == (old, old | {"name": "B"})
    assert (deleted.data["before"], deleted.data["after"]) == (old | {"name": "B"}, None)
    assert updated.channel == "public.people"


async def test_a_transaction_of_many_rows_and_tables_keeps_order_and_isolation(dsn: str) -> None:
    await sql(dsn, "CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY)")
    async with cdc_connector(dsn, retain=5000) as connector:
        await connector.watch("a")
        await connector.watch("b")
        await sql(
            dsn,
            "INSERT INTO a SELECT g FROM generate_series(1, 3000) g;"
            "INSERT INTO b VALUES (1); COPY a FROM PROGRAM 'seq 3001 3003'",
        )
        async with closing(connector.subscribe("a", EARLIEST)) as stream:
            rows = [e.data["after"]["id"] for e in await take_events(stream, 3003)]
            assert rows == list(range(1, 3004))
        async with closing(connector.subscribe("b", EARLIEST)) as stream:
            (only,) = await take_events(stream, 1)
            assert only.data["after"] == {"id": 1}
            await nothing_more(stream, 0.2)


async def test_resume_from_a_cursor_is_exact(dsn: str) -> None:
    await sql(dsn, "CREATE TABLE t (id int PRIMARY KEY)")
    async with cdc_connector(dsn) as connector:
        await connector.watch("public.t")
        for n in range(1, 6):
            await sql(dsn, "INSERT INTO t VALUES (%s)", n)
        async with closing(connector.subscribe("public.t", EARLIEST)) as stream:
            events = await take_events(stream, 5)
        cursors = [e.cursor or "" for e in events]
        async with closing(connector.subscribe("public.t", cursors[1])) as stream:
            resumed = await take_events(stream, 3)
            assert [e.cursor for e in resumed] == cursors[2:]
            await sql(dsn, "INSERT INTO t VALUES (6)")
            (live,) = await take_events(stream, 1)
            assert live.data["after"] == {"id": 6}
        assert await connector.position("public.t") == live.cursor
        ranged = connector.read_range("public.t", cursors[0], cursors[2])
        assert [e.cursor for e in await take_events(ranged, 2)] == cursors[1:3]


async def test_publishing_to_a_table_is_refused(dsn: str) -> None:
    async with cdc_connector(dsn) as connector:
        with pytest.raises(ConnectorError, match="read-only"):
            await connector.publish("public.t", Event("public.t", {"id": 1}))


async def test_a_restarted_connector_resumes_exactly_with_changes_made_while_down(
    dsn: str, tmp_path: Path
) -> None:
    await sql(dsn, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    slot = "sbtest_restart_" + tmp_path.name[-8:].replace("-", "_").lower()
    async with cdc_connector(dsn, slot=slot, data_dir=tmp_path) as first:
        await first.watch("public.t")
        await sql(dsn, "INSERT INTO t VALUES (1, 'a'), (2, 'b')")
        async with closing(first.subscribe("public.t", EARLIEST)) as stream:
            seen = await take_events(stream, 2)
    last = seen[0].cursor  # the client saw only the first one
    await sql(dsn, "INSERT INTO t VALUES (3, 'while down')")
    await sql(dsn, "UPDATE t SET v = 'changed while down' WHERE id = 1")
    async with (
        cdc_connector(dsn, slot=slot, data_dir=tmp_path) as second,
        closing(second.subscribe("public.t", last)) as stream,
    ):
        resumed = await take_events(stream, 3)
        assert [(e.data["op"], e.data["after"]) for e in resumed] == [
            ("c", {"id": 2, "v": "b"}),
            ("c", {"id": 3, "v": "while down"}),
            ("u", {"id": 1, "v": "changed while down"}),
        ]
        assert resumed[0].cursor == seen[1].cursor
        await nothing_more(stream, 0.3)


async def test_a_restart_leaves_each_table_log_on_disk_until_it_is_needed(
    dsn: str, tmp_path: Path
) -> None:
    """Captured tables are captured again after a restart, but their logs are not
    reopened at start (CONTRACT §4c): a table's log is loaded when one of its changes
    arrives or a subscriber asks, and nothing made while the gateway was down is lost."""
    await sql(dsn, "CREATE TABLE quiet (id int PRIMARY KEY)")
    await sql(dsn, "CREATE TABLE busy (id int PRIMARY KEY)")
    slot = new_slot()
    async with cdc_connector(dsn, slot=slot, data_dir=tmp_path) as first:
        for table in ("quiet", "busy"):
            await first.watch(table)
            await sql(dsn, f"INSERT INTO {table} VALUES (1)")
            async with closing(first.subscribe(table, EARLIEST)) as stream:
                (last,) = await take_events(stream, 1)
    paths = {
        t: log_path(tmp_path, f"postgres-cdc-{first.slot}", f"public.{t}")
        for t in ("quiet", "busy")
    }

    def stamp(table: str) -> tuple[int, int]:
        path = paths[table]
        assert path is not None
        return path.stat().st_ino, path.stat().st_mtime_ns

    quiet_before = stamp("quiet")
    await sql(dsn, "INSERT INTO busy VALUES (2)")  # while down
    async with cdc_connector(dsn, slot=slot, data_dir=tmp_path) as second:
        async with closing(second.subscribe("busy", last.cursor)) as stream:
            assert [e.data["after"] for e in await take_events(stream, 1)] == [{"id": 2}]
        assert stamp("quiet") == quiet_before  # neither loaded nor rewritten
        await sql(dsn, "INSERT INTO quiet VALUES (2)")  # captured all along
        async with closing(second.subscribe("quiet", EARLIEST)) as stream:
            ids = [e.data["after"]["id"] for e in await take_events(stream, 2)]
            await nothing_more(stream, 0.3)
        assert ids == [1, 2]


async def test_changes_stored_but_not_confirmed_before_a_crash_are_not_doubled(
    dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The slot advances only after the logs hold the changes; a gateway that dies in
    between reads them again at start, and the logs keep one copy of each."""
    await sql(dsn, "CREATE TABLE t (id int PRIMARY KEY)")
    slot = new_slot()
    with monkeypatch.context() as crashing:
        crashing.setattr(Slot, "advance", _never_advance)
        async with cdc_connector(dsn, slot=slot, data_dir=tmp_path) as first:
            await first.watch("t")
            await sql(dsn, "INSERT INTO t VALUES (1), (2)")
            await sql(dsn, "INSERT INTO t VALUES (3)")
            async with closing(first.subscribe("t", EARLIEST)) as stream:
                stored = await take_events(stream, 3)
    unconfirmed = await sql(
        dsn, "SELECT count(*) FROM pg_logical_slot_peek_changes(%s, NULL, NULL)", slot
    )
    assert unconfirmed[0][0] > 0  # the slot still holds them
    async with cdc_connector(dsn, slot=slot, data_dir=tmp_path) as second:
        await second.watch("t")  # a round has re-read them
        await sql(dsn, "INSERT INTO t VALUES (4)")
        async with closing(second.subscribe("t", EARLIEST)) as stream:
            again = await take_events(stream, 4)
            await nothing_more(stream, 0.3)
    assert [e.cursor for e in again[:3]] == [e.cursor for e in stored]
    assert [e.data["after"]["id"] for e in again] == [1, 2, 3, 4]


async def _never_advance(self: Slot, lsn: int) -> None:
    """A gateway that stops right after storing, before confirming."""
