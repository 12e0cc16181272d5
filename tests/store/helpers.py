"""Helpers of the store suite: fresh PostgreSQL databases, raw table reads, configs."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any

import asyncpg
import pytest
from sqlalchemy import Table, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from bridge.config import Config, parse_config
from bridge.store import Store
from bridge.store.engine import engine_url
from bridge.store.schema import metadata, revision

POSTGRES_URL = os.environ.get(
    "STREAMBRIDGE_TEST_PG",
    "postgresql://streambridge:streambridge@127.0.0.1:5432/streambridge_test",
)


async def connect(url: str, database: str | None = None) -> asyncpg.Connection:
    """A plain asyncpg connection; an unreachable server fails the test, naming the fix."""
    parsed = make_url(url)
    try:
        return await asyncpg.connect(
            host=parsed.host,
            port=parsed.port,
            user=parsed.username,
            password=parsed.password,
            database=database or parsed.database,
            timeout=5,
        )
    except (OSError, asyncpg.PostgresError) as exc:
        problem = str(exc)
    pytest.fail(
        f"PostgreSQL at {parsed.render_as_string(hide_password=True)} is not reachable "
        f"({problem}); run scripts/services.sh (or set STREAMBRIDGE_TEST_PG)",
        pytrace=False,
    )


async def create_postgres_database() -> str:
    """Create ``sb_<uuid>`` through the ``postgres`` database; its URL."""
    name = f"sb_{uuid.uuid4().hex}"
    admin = await connect(POSTGRES_URL, database="postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)


async def drop_postgres_database(url: str) -> None:
    admin = await connect(POSTGRES_URL, database="postgres")
    try:
        await admin.execute(f'DROP DATABASE "{make_url(url).database}" WITH (FORCE)')
    finally:
        await admin.close()


@contextmanager
def postgres_database() -> Iterator[str]:
    """A new database for as long as the block lasts; synchronous, so that a fixture
    wider than the tests' event loops can hold it."""
    url = asyncio.run(create_postgres_database())
    try:
        yield url
    finally:
        asyncio.run(drop_postgres_database(url))


@asynccontextmanager
async def opened_together(stores: Sequence[Store]) -> AsyncIterator[None]:
    """Open every store at the same moment (gateways starting together), close them all
    when the block ends; those that opened are closed even if another one failed."""
    async with AsyncExitStack() as stack:
        async with asyncio.TaskGroup() as opening:
            for store in stores:
                opening.create_task(stack.enter_async_context(store))
        yield


async def empty_tables(url: str) -> None:
    """Remove every object a test stored and set the revision back to 0, keeping the
    migrated schema (if the database has one yet)."""
    conn = await connect(url)
    try:
        if await conn.fetchval("SELECT to_regclass($1)", revision.name) is not None:
            names = ", ".join(t.name for t in metadata.sorted_tables if t is not revision)
            await conn.execute(f"TRUNCATE {names}; UPDATE {revision.name} SET value = 0")
    finally:
        await conn.close()


async def table_rows(url: str, table: Table) -> list[dict[str, Any]]:
    """Every row of ``table`` as stored, read past the Store."""
    engine = create_async_engine(engine_url(url))
    try:
        async with engine.connect() as conn:
            result = await conn.execute(select(table))
            return [dict(row._mapping) for row in result]
    finally:
        await engine.dispose()


SECRET = "dashboard-secret-1"


def quick_hash(secret: str) -> str:
    """A stand-in for bridge.secrets.hash_secret (scrypt, ~0.1 s a call) where a test
    only needs the hash to change with the secret."""
    return "sha256$" + hashlib.sha256(secret.encode()).hexdigest()


def make_config(
    *,
    api_description: str = "orders",
    gold_rate: int = 6000,
    app_name: str = "dashboard",
    secret: str = SECRET,
    subscriptions: list[dict[str, str]] | None = None,
) -> Config:
    """A small config (CONTRACT §2): two tiers, two APIs, one application. The keywords
    change one seeded object each, as an operator editing the file would."""
    if subscriptions is None:
        subscriptions = [{"api": "Orders", "version": "1.0.0", "tier": "Gold"}]
    topics = [{"name": "/created", "channel": "orders.created", "scopes": ["orders:read"]}]
    return parse_config(
        {
            "brokers": {"demo": {"type": "memory"}},
            "tiers": {"Gold": {"events_per_minute": gold_rate}, "Free": {}},
            "apis": [
                {
                    "name": "Orders",
                    "version": "1.0.0",
                    "context": "/orders",
                    "broker": "demo",
                    "tiers": ["Gold", "Free"],
                    "description": api_description,
                    "replay": {"max_age": "5m"},
                    "topics": topics,
                },
                {
                    "name": "Stock",
                    "version": "2",
                    "context": "/stock",
                    "broker": "demo",
                    "topics": [{"name": "/levels", "channel": "stock"}],
                },
            ],
            "applications": [
                {
                    "name": app_name,
                    "client_id": "dashboard",
                    "client_secret": secret,
                    "subscriptions": subscriptions,
                }
            ],
        },
        env={},
    )
