"""Helpers of the CDC suite: a private PostgreSQL database per test, SQL against it, and
connectors with a unique replication slot (slots are cluster-wide) dropped afterwards."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from bridge.config import PostgresCdcBroker
from bridge.event import Event
from connectors.base import Gap
from connectors.postgres import PostgresCdcConnector
from tests.store.helpers import POSTGRES_URL, create_postgres_database, drop_postgres_database

DEADLINE = 10.0  # seconds any awaited result may take before the test fails


def plain_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@asynccontextmanager
async def cdc_database() -> AsyncIterator[str]:
    """A new database (its DSN) for the block; its replication slots are dropped with it."""
    url = await create_postgres_database()
    try:
        yield plain_dsn(url)
    finally:
        await drop_slots(make_url(url).database or "")
        await drop_postgres_database(url)


@contextmanager
def module_database(*statements: str) -> Iterator[str]:
    """``cdc_database`` for a module-scoped (synchronous) fixture, with ``statements`` run
    in it first."""
    url = asyncio.run(create_postgres_database())
    dsn = plain_dsn(url)
    try:
        for statement in statements:
            asyncio.run(sql(dsn, statement))
        yield dsn
    finally:
        asyncio.run(drop_slots(make_url(url).database or ""))
        asyncio.run(drop_postgres_database(url))


async def drop_slots(database: str) -> None:
    async with await psycopg.AsyncConnection.connect(
        plain_dsn(POSTGRES_URL), autocommit=True
    ) as admin:
        for _ in range(50):  # an active slot is released once its session ends
            found = await admin.execute(
                "SELECT slot_name, active FROM pg_replication_slots WHERE database = %s",
                (database,),
            )
            slots = await found.fetchall()
            for name, active in slots:
                if not active:
                    await admin.execute("SELECT pg_drop_replication_slot(%s)", (name,))
            if not any(active for _, active in slots):
                return
            await asyncio.sleep(0.1)


async def sql(dsn: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run one statement in its own transaction; its rows (if any)."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cursor = await conn.execute(statement, params or None)
        return await cursor.fetchall() if cursor.description else []


def new_slot() -> str:
    return f"sbtest_{uuid.uuid4().hex[:16]}"


def cdc_connector(
    dsn: str,
    *,
    slot: str | None = None,
    data_dir: Path | None = None,
    retain: int = 1000,
    name: str = "db",
) -> PostgresCdcConnector:
    settings = PostgresCdcBroker(type="postgres-cdc", dsn=dsn, slot=slot or new_slot())
    return PostgresCdcConnector(name, settings, retain=retain, max_age=600.0, data_dir=data_dir)


async def take(stream: AsyncIterator[Event | Gap], count: int) -> list[Event | Gap]:
    async def collect() -> list[Event | Gap]:
        return [await anext(stream) for _ in range(count)]

    return await asyncio.wait_for(collect(), DEADLINE)


async def take_events(stream: AsyncIterator[Event | Gap], count: int) -> list[Event]:
    items = await take(stream, count)
    events = [item for item in items if isinstance(item, Event)]
    assert len(events) == count, items
    return events


async def nothing_more(stream: AsyncIterator[Event | Gap], wait: float = 0.5) -> None:
    try:
        extra = await asyncio.wait_for(anext(stream), wait)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected {extra}")


@asynccontextmanager
async def closing(stream: AsyncIterator[Event | Gap]) -> AsyncIterator[AsyncIterator[Event | Gap]]:
    try:
        yield stream
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
