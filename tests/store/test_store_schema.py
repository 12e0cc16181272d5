"""Migrations (issue 3): applied on an empty database at open, idempotent on the next
open, safe when two processes open a new database at once, and in step with schema.py."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import alembic.config
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData, Table, select
from sqlalchemy.ext.asyncio import create_async_engine

from bridge.config import Tier
from bridge.store import Store
from bridge.store.engine import HEAD, MIGRATIONS, engine_url
from bridge.store.schema import VERSION_TABLE, metadata
from tests.store.helpers import opened_together

T = TypeVar("T")


async def on_connection(url: str, work: Callable[[Connection], T]) -> T:
    """Run ``work`` on a plain connection to the store's database, outside the Store."""
    engine = create_async_engine(engine_url(url))
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(work)
    finally:
        await engine.dispose()


def head() -> str:
    config = alembic.config.Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    revision = ScriptDirectory.from_config(config).get_current_head()
    assert revision is not None
    return revision


def stored_versions(conn: Connection) -> list[str]:
    table = Table(VERSION_TABLE, MetaData(), autoload_with=conn)
    return [row.version_num for row in conn.execute(select(table))]


def schema_differences(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    return list(compare_metadata(context, metadata))


def journal_mode(conn: Connection) -> str:
    return str(conn.exec_driver_sql("PRAGMA journal_mode").scalar())


def test_head_names_the_newest_migration() -> None:
    """A store at HEAD opens without Alembic: HEAD must be what Alembic calls its head."""
    assert head() == HEAD


async def test_open_migrates_an_empty_database_to_head(empty_store_url: str) -> None:
    async with Store.from_url(empty_store_url) as store:
        assert await store.revision() == 0
        assert await store.ping()
    assert await on_connection(empty_store_url, stored_versions) == [head()]
    if empty_store_url.startswith("sqlite"):  # readers never wait for the writer
        assert await on_connection(empty_store_url, journal_mode) == "wal"


async def test_second_open_keeps_schema_and_data(empty_store_url: str) -> None:
    async with Store.from_url(empty_store_url) as store:
        await store.put_tier("Gold", Tier(events_per_minute=60))
    async with Store.from_url(empty_store_url) as store:
        assert await store.revision() == 1
        assert (await store.snapshot()).tiers == {"Gold": Tier(events_per_minute=60)}
    assert await on_connection(empty_store_url, stored_versions) == [head()]


async def test_two_stores_in_one_process_opening_a_new_database_at_once(
    empty_store_url: str,
) -> None:
    first, second = Store.from_url(empty_store_url), Store.from_url(empty_store_url)
    async with opened_together([first, second]):
        assert await first.revision() == await second.revision() == 0
    assert await on_connection(empty_store_url, stored_versions) == [head()]


OPEN_AND_REPORT = """
import asyncio, sys
from bridge.store import Store

async def main() -> None:
    async with Store.from_url(sys.argv[1]) as store:
        print(await store.revision())

asyncio.run(main())
"""


async def test_a_store_at_head_opens_without_alembic(empty_store_url: str) -> None:
    """The next open of a migrated store has nothing to migrate and loads no Alembic."""
    async with Store.from_url(empty_store_url):
        pass
    check = OPEN_AND_REPORT + "print('alembic' in sys.modules)\n"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", check, empty_store_url, stdout=asyncio.subprocess.PIPE
    )
    stdout, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0
    assert stdout.decode().split() == ["0", "False"]
    assert await on_connection(empty_store_url, stored_versions) == [head()]


async def test_two_processes_opening_a_new_database_at_once(empty_store_url: str) -> None:
    """Separate processes: only the database's own lock can order their migrations."""
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            OPEN_AND_REPORT,
            empty_store_url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outputs = await asyncio.wait_for(
        asyncio.gather(*(process.communicate() for process in processes)), timeout=60
    )
    for process, (stdout, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr.decode()[-2000:]
        assert stdout.decode().strip() == "0"
    assert await on_connection(empty_store_url, stored_versions) == [head()]


async def test_migrations_build_exactly_the_schema_the_code_queries(empty_store_url: str) -> None:
    async with Store.from_url(empty_store_url):
        pass
    assert await on_connection(empty_store_url, schema_differences) == []
