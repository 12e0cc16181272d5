"""The postgres-cdc connector as the connector contract suite sees a broker.

CDC has no publish (tables are written with SQL), so this binding stands in for a
producer: ``publish`` inserts a row (the event's data as jsonb, its key and headers) into
the channel's table, and ``subscribe`` gives the inserted row's values back as the event.
Everything between, the slot, decoding, the per-table logs, cursors, resume, eviction and
gaps, is the real connector against the real PostgreSQL. A fresh database per binding.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Self

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from bridge.event import Event
from connectors.base import Gap
from connectors.postgres import PostgresCdcConnector
from connectors.postgres.logs import split_channel
from tests.cdc.helpers import cdc_connector, cdc_database


class TableBroker:
    def __init__(self, name: str, *, retain: int) -> None:
        self.name = name
        self.retain = retain
        self._stack = AsyncExitStack()
        self._connector: PostgresCdcConnector | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._tables: set[str] = set()

    async def __aenter__(self) -> Self:
        async with AsyncExitStack() as stack:
            dsn = await stack.enter_async_context(cdc_database())
            self._conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
            stack.push_async_callback(self._conn.close)
            connector = cdc_connector(dsn, retain=self.retain, name=self.name)
            self._connector = await stack.enter_async_context(connector)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    def _opened(self) -> tuple[PostgresCdcConnector, psycopg.AsyncConnection[Any]]:
        assert self._connector is not None and self._conn is not None, "not open"
        return self._connector, self._conn

    async def _table(self, channel: str) -> sql.Composed:
        _, conn = self._opened()
        schema, table = split_channel(channel)
        name = sql.Identifier(schema, table)
        if channel not in self._tables:
            await conn.execute(
                sql.SQL(
                    "CREATE SCHEMA IF NOT EXISTS {}; CREATE TABLE IF NOT EXISTS {} "
                    "(n bigserial PRIMARY KEY, data jsonb, key text, headers jsonb)"
                ).format(sql.Identifier(schema), name)
            )
            self._tables.add(channel)
        return sql.Composed([name])

    async def ready(self) -> bool:
        connector, _ = self._opened()
        return await connector.ready()

    async def watch(self, channel: str) -> None:
        connector, _ = self._opened()
        await self._table(channel)
        await connector.watch(channel)

    async def publish(self, channel: str, event: Event) -> None:
        _, conn = self._opened()
        table = await self._table(channel)
        await conn.execute(
            sql.SQL("INSERT INTO {} (data, key, headers) VALUES (%s, %s, %s)").format(table),
            (Jsonb(event.data), event.key, Jsonb(dict(event.headers))),
        )

    async def subscribe(
        self, channel: str, from_cursor: str | None = None
    ) -> AsyncIterator[Event | Gap]:
        connector, _ = self._opened()
        await self._table(channel)
        async for item in connector.subscribe(channel, from_cursor):
            yield _as_published(channel, item)

    async def position(self, channel: str) -> str | None:
        connector, _ = self._opened()
        await self._table(channel)
        return await connector.position(channel)

    async def read_range(
        self, channel: str, from_cursor: str, until_cursor: str | None
    ) -> AsyncIterator[Event | Gap]:
        connector, _ = self._opened()
        await self._table(channel)
        async for item in connector.read_range(channel, from_cursor, until_cursor):
            yield _as_published(channel, item)


def _as_published(channel: str, item: Event | Gap) -> Event | Gap:
    """The row a change inserted, as the event the suite published."""
    if isinstance(item, Gap):
        return item
    row = item.data["after"]
    return Event(
        channel,
        row["data"],
        key=row["key"],
        headers=row["headers"] or {},
        time=item.time,
        cursor=item.cursor,
    )
