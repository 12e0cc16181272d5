"""postgres-cdc failures are clear errors and an unready connector, never a silent stop
(CONTRACT §7b, §9): wal_level, a missing table, a lost slot, an unreachable server."""

from __future__ import annotations

import asyncio
import logging

import psycopg
import pytest

import connectors.postgres.poller as poller
import connectors.postgres.slot as pg_slot
from bridge.errors import ConnectorError
from connectors.base import EARLIEST, Gap
from connectors.postgres.slot import check_wal_level
from tests.cdc.helpers import DEADLINE, cdc_connector, closing, new_slot, sql, take, take_events


@pytest.mark.parametrize("level", ["replica", "minimal"])
def test_a_wal_level_other_than_logical_is_an_error_naming_the_fix(level: str) -> None:
    with pytest.raises(ConnectorError) as raised:
        check_wal_level(level)
    message = str(raised.value)
    assert f"wal_level is {level!r}" in message
    assert "wal_level = logical" in message and "restart" in message
    assert raised.value.retriable is False
    check_wal_level("logical")


async def test_a_server_without_logical_wal_level_makes_the_connector_unready(
    dsn: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The shared cluster cannot be restarted with another wal_level, so the server's answer
    to the connector's settings query is stubbed here; everything after it is real."""
    monkeypatch.setattr(pg_slot, "SERVER_SETTINGS", "SELECT 'replica'::text, current_database()")
    await sql(dsn, "CREATE TABLE t (id int PRIMARY KEY)")
    with caplog.at_level(logging.ERROR, logger="connectors.postgres"):
        async with cdc_connector(dsn) as connector:
            assert await connector.ready() is False
            assert "wal_level" in (connector.problem or "")
            with pytest.raises(ConnectorError, match="wal_level is 'replica'"):
                await anext(connector.subscribe("public.t"))
    assert any("wal_level" in r.getMessage() for r in caplog.records)
    assert await sql(dsn, "SELECT count(*) FROM pg_replication_slots") == [(0,)]


async def test_a_missing_table_is_an_error_naming_it_until_it_exists(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with cdc_connector(dsn) as connector:
        assert await connector.ready()
        with (
            caplog.at_level(logging.ERROR, logger="connectors.postgres"),
            pytest.raises(ConnectorError, match=r"table public\.orders does not exist"),
        ):
            await anext(connector.subscribe("public.orders"))
        assert await connector.ready() is False
        assert "public.orders" in (connector.problem or "")
        # the table is a field of the line (gateway/logs.py prints it as table=...)
        assert any(getattr(r, "table", None) == "public.orders" for r in caplog.records)

        await sql(dsn, "CREATE TABLE orders (id int PRIMARY KEY)")
        await connector.watch("public.orders")
        assert await connector.ready()


async def test_a_dropped_watched_table_makes_the_connector_unready(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(poller, "TABLE_CHECK", 0.05)
    await sql(dsn, "CREATE TABLE t (id int PRIMARY KEY)")
    async with cdc_connector(dsn) as connector:
        await connector.watch("t")
        await sql(dsn, "DROP TABLE t")
        async with asyncio.timeout(DEADLINE):
            while await connector.ready():
                await asyncio.sleep(0.05)
        assert "public.t" in (connector.problem or "")


async def _drop_slot(dsn: str, slot: str) -> None:
    """Drop it behind the connector's back (retrying while a peek holds it)."""
    async with asyncio.timeout(DEADLINE):
        while True:
            try:
                await sql(dsn, "SELECT pg_drop_replication_slot(%s)", slot)
                return
            except psycopg.errors.ObjectInUse:  # "replication slot ... is active for PID ..."
                await asyncio.sleep(0.01)  # polling interval while a peek holds the slot


async def test_a_lost_slot_is_recreated_and_followers_get_a_gap(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    await sql(dsn, "CREATE TABLE t (id int PRIMARY KEY)")
    slot = new_slot()
    async with cdc_connector(dsn, slot=slot) as connector:
        await connector.watch("t")
        await sql(dsn, "INSERT INTO t VALUES (1)")
        async with closing(connector.subscribe("t", EARLIEST)) as stream:
            (first,) = await take_events(stream, 1)
            with caplog.at_level(logging.ERROR, logger="connectors.postgres"):
                await _drop_slot(dsn, slot)
                async with asyncio.timeout(DEADLINE):  # detected, and the slot is back
                    while connector.slot_losses == 0 or not await connector.ready():
                        await asyncio.sleep(0.01)
            await sql(dsn, "INSERT INTO t VALUES (3)")
            items = await take(stream, 2)
            gap, after = items
            assert isinstance(gap, Gap) and gap.requested == first.cursor
            assert not isinstance(after, Gap) and after.data["after"] == {"id": 3}
        assert any(f"replication slot {slot} was lost" in r.getMessage() for r in caplog.records)
        assert await connector.ready()
        # A later subscriber resuming from before the loss is told too.
        async with closing(connector.subscribe("t", first.cursor)) as stream:
            gap, after = await take(stream, 2)
            assert isinstance(gap, Gap)
            assert not isinstance(after, Gap) and after.data["after"] == {"id": 3}
        slots = await sql(dsn, "SELECT slot_name FROM pg_replication_slots")
        assert slots == [(slot,)]


async def test_an_unreachable_server_is_reported_not_waited_on() -> None:
    connector = cdc_connector("postgresql://nobody:x@127.0.0.1:1/nothing")
    async with connector:
        assert await connector.ready() is False
        assert "cannot connect" in (connector.problem or "")
        with pytest.raises(ConnectorError, match="cannot connect"):
            await asyncio.wait_for(anext(connector.subscribe("public.t")), DEADLINE)


async def test_a_table_whose_updates_postgres_does_not_log_is_warned_about(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Without a primary key or replica identity, wal2json skips updates and deletes:
    the connector says so when the table is watched rather than lose them silently."""
    await sql(dsn, "CREATE TABLE keyless (a int, b text)")
    await sql(dsn, "CREATE TABLE keyed (a int PRIMARY KEY)")
    with caplog.at_level(logging.WARNING, logger="connectors.postgres"):
        async with cdc_connector(dsn) as connector:
            await connector.watch("keyless")
            await connector.watch("keyed")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert getattr(warnings[0], "table", None) == "public.keyless"
    assert "REPLICA IDENTITY FULL" in warnings[0].getMessage()


async def test_a_lost_connection_is_reported_and_nothing_committed_meanwhile_is_lost(
    dsn: str,
) -> None:
    """The poller's session is killed (as by a server restart); the connector reconnects
    and the slot still holds what was committed in between."""
    await sql(dsn, "CREATE TABLE t (id int PRIMARY KEY)")
    async with cdc_connector(dsn) as connector:
        await connector.watch("t")
        async with closing(connector.subscribe("t", EARLIEST)) as stream:
            await sql(dsn, "INSERT INTO t VALUES (1)")
            await take_events(stream, 1)
            killed = await sql(
                dsn,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'streambridge-cdc-db' AND datname = current_database()",
            )
            assert killed == [(True,)]
            await sql(dsn, "INSERT INTO t VALUES (2)")
            (second,) = await take_events(stream, 1)
            assert second.data["after"] == {"id": 2}
        assert connector.reconnects >= 1
        assert await connector.ready()
