"""A table's current rows, consistent with the change stream (CONTRACT §7b ``snapshot``).

A temporary logical slot is created over a replication connection with
``EXPORT_SNAPSHOT``; a second connection imports that snapshot into a REPEATABLE READ
transaction and reads the table there. The rows then reflect exactly the transactions that
committed before the slot's consistent point: every change committed at or after it is in
the change stream (the connector's own slot decodes it, as the table is watched before the
snapshot is taken), none before it. This is how PostgreSQL's own logical replication copies
a table before it streams changes. The temporary slot goes away with its connection, once
the snapshot is imported.

Column values are read as their types' output functions write them (as wal2json does)
and mapped by ``connectors/postgres/values.py``, so a snapshot row and an insert of the same
values look the same.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any, Self

import psycopg
from psycopg import sql

from bridge.changes import envelope, format_lsn, parse_lsn
from bridge.errors import ConnectorError
from bridge.event import Event
from connectors.postgres.values import to_json

FETCH = 500  # rows per round trip of the server-side cursor

_COLUMNS = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), coalesce(i.indisprimary, false)
FROM pg_attribute a
LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary AND a.attnum = ANY(i.indkey)
WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


def _as_output(column: str) -> sql.Composable:
    """A column as its type's output function writes it, as wal2json does (a ``::text``
    cast differs for some types: it trims ``character(n)`` and adds ``/32`` to ``inet``)."""
    name = sql.Identifier(column)
    return sql.SQL("CASE WHEN {} IS NULL THEN NULL ELSE format('%s', {}) END").format(name, name)


class SnapshotRows:
    """The rows as ``op: "r"`` events (cursor None), read as they are iterated. Holds a
    connection (in ``resources``) until exhausted, failed or ``aclose``d."""

    def __init__(
        self,
        resources: AsyncExitStack,
        cursor: psycopg.AsyncServerCursor[Any],
        make_event: Callable[[tuple[Any, ...]], Event],
    ) -> None:
        self._resources: AsyncExitStack | None = resources
        self._cursor = cursor
        self._make_event = make_event

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event:
        if self._resources is None:
            raise StopAsyncIteration
        try:
            row = await self._cursor.fetchone()
        except psycopg.Error as error:
            await self.aclose()
            raise ConnectorError(f"snapshot read failed: {error}") from error
        if row is None:
            await self.aclose()
            raise StopAsyncIteration
        return self._make_event(row)

    async def aclose(self) -> None:
        resources, self._resources = self._resources, None
        if resources is not None:
            await resources.aclose()  # ends the read-only transaction


async def _close_cursor(
    conn: psycopg.AsyncConnection[Any], cursor: psycopg.AsyncServerCursor[Any]
) -> None:
    if not conn.closed:
        await cursor.close()


async def take_snapshot(
    dsn: str,
    schema: str,
    table: str,
    *,
    channel: str,
    database: str,
    options: str,
) -> tuple[int, SnapshotRows]:
    """The consistent point (an LSN) and the rows of ``schema.table`` as of just before it."""
    async with (
        AsyncExitStack() as resources,
        # The walsender speaks simple queries only. Closing it drops the temporary slot;
        # the snapshot stays imported.
        await psycopg.AsyncConnection.connect(
            dsn, replication="database", autocommit=True, cursor_factory=psycopg.AsyncClientCursor
        ) as replication,
    ):
        slot = f"streambridge_snapshot_{secrets.token_hex(6)}"
        command = await replication.execute(
            f"CREATE_REPLICATION_SLOT {slot} TEMPORARY LOGICAL wal2json EXPORT_SNAPSHOT"
        )
        created = await command.fetchone()
        assert created is not None
        consistent_point, snapshot_name = parse_lsn(created[1]), created[2]
        reader = await psycopg.AsyncConnection.connect(dsn, options=options)
        resources.push_async_callback(reader.close)
        await reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        await reader.execute(
            sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_name))
        )
        name = sql.Identifier(schema, table)
        described = await reader.execute(_COLUMNS, (name.as_string(reader),))
        columns = await described.fetchall()
        cursor = reader.cursor(name="streambridge_snapshot")
        resources.push_async_callback(_close_cursor, reader, cursor)
        cursor.itersize = FETCH
        select = sql.SQL("SELECT {} FROM {}").format(
            sql.SQL(", ").join(_as_output(c[0]) for c in columns),
            name,
        )
        await cursor.execute(select)
        held = resources.pop_all()  # the rows hold the reader from here on

    names = [c[0] for c in columns]
    types = [c[1] for c in columns]
    key_columns = [c[0] for c in columns if c[2]]
    taken = time.time()
    source: dict[str, Any] = {
        "db": database,
        "schema": schema,
        "table": table,
        "lsn": format_lsn(consistent_point),
        "ts_ms": round(taken * 1000),
        "snapshot": True,
    }

    def make_event(row: tuple[Any, ...]) -> Event:
        after = {n: to_json(t, v) for n, t, v in zip(names, types, row, strict=True)}
        key = {n: after[n] for n in key_columns} if key_columns else None
        return Event(
            channel=channel,
            data=envelope("r", None, after, source),
            key=json.dumps(key, separators=(",", ":")) if key is not None else None,
            time=taken,
        )

    return consistent_point, SnapshotRows(held, cursor, make_event)
