"""The state store's database (issue 3): which driver a ``gateway.state`` URL gets, how
SQLite connections are set up, the Alembic upgrade that runs when a store opens (only when
the schema is not at :data:`HEAD`), and the one :class:`Database` whose transactions every
part of the store shares.

SQLite runs in WAL mode (readers never wait for the writer) with a 30 s busy timeout, and
write transactions begin with ``BEGIN IMMEDIATE`` so two writers queue on the lock
instead of failing when a read transaction tries to become a write one.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

from sqlalchemy import (
    Connection,
    Engine,
    String,
    Table,
    column,
    event,
    inspect,
    select,
    table,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from bridge.errors import Conflict, StoreError
from bridge.store.schema import VERSION_TABLE

MIGRATIONS: Final = Path(__file__).with_name("migrations")
# The newest migration's revision (tests/store/test_store_schema.py checks it is Alembic's
# head): a store already there opens without loading Alembic at all.
HEAD: Final = "0007"
WRITE: Final = "streambridge_write"  # execution option: this transaction will write
# pg_advisory_xact_lock key: processes starting together on one database migrate in turn.
MIGRATE_LOCK: Final = 0x7362_0001
SLOW_TRANSACTION_SECONDS = 1.0  # a transaction at least this long is logged
log = logging.getLogger("streambridge.store")


def engine_url(url: str) -> URL:
    """``gateway.state`` as an asyncio driver URL: sqlite+aiosqlite or postgresql+asyncpg.

    ``sqlite:///state.db`` is relative to the working directory, ``sqlite:////var/x.db``
    absolute. Errors never repeat the URL, which may hold a password."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError("gateway.state is not a database URL") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise StoreError("gateway.state: a SQLite store needs a file, sqlite:///path.db")
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg")
    raise StoreError(f"gateway.state: unsupported database {backend!r} (sqlite or postgresql)")


def is_postgres(url: URL) -> bool:
    return url.get_backend_name() == "postgresql"


async def open_engine(url: URL) -> AsyncEngine:
    """An engine for ``url`` (from :func:`engine_url`); connects lazily. A SQLite file's
    directory is created if missing."""
    if is_postgres(url):
        options: dict[str, Any] = {
            "pool_pre_ping": True,  # survive a database restart between polls
            "connect_args": {
                "timeout": 10,
                "server_settings": {"application_name": "streambridge"},
            },
        }
    else:
        directory = Path(url.database or "").parent
        await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
        options = {"connect_args": {"timeout": 30}}
    # hide_parameters: statement parameters (secret hashes, key PEMs) stay out of error
    # messages and logs.
    engine = create_async_engine(url, hide_parameters=True, **options)
    if not is_postgres(url):
        _configure_sqlite(engine.sync_engine)
    return engine


def _configure_sqlite(engine: Engine) -> None:
    """pysqlite defers BEGIN and skips it for reads; take that over (SQLAlchemy's recipe
    for pysqlite and aiosqlite) so a read sees one snapshot and a writer locks first."""

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    def on_begin(conn: Connection) -> None:
        writes = conn.get_execution_options().get(WRITE)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")

    event.listen(engine, "connect", on_connect)
    event.listen(engine, "begin", on_begin)


_MIGRATION_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def migration_lock() -> asyncio.Lock:
    """Alembic's ``context`` and ``op`` are process-wide proxies to the migration running
    now; two stores migrating at once on one loop (their greenlets interleave) would send
    one's DDL down the other's connection. So migrations in a process take turns."""
    loop = asyncio.get_running_loop()
    return _MIGRATION_LOCKS.setdefault(loop, asyncio.Lock())


def upgrade_to_head(connection: Connection) -> None:
    """``alembic upgrade head`` on a store connection (run it with ``run_sync``, inside a
    write transaction, holding :func:`migration_lock`). It runs once at start, before the
    gateway serves; Alembic reads its few small scripts from the package directory.

    A store whose version table already says :data:`HEAD` is left as it is without
    importing Alembic: its import and script loading were a tenth of a gateway's start,
    and most starts (restarts, gateways sharing a store) have nothing to migrate."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATE_LOCK})
    if stored_revisions(connection) == [HEAD]:
        return
    import alembic.command
    import alembic.config

    config = alembic.config.Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    alembic.command.upgrade(config, "head")


def stored_revisions(connection: Connection) -> list[str]:
    """The revisions in the store's version table; none in a new database."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return []
    versions = select(column("version_num", String)).select_from(table(VERSION_TABLE))
    return [str(revision) for revision in connection.execute(versions).scalars()]


class Database:
    """One state store database: an async context manager whose entering creates the
    engine and migrates the schema, and whose :meth:`transaction` is the only way to it.

    Database errors are mapped to :class:`~bridge.errors.StoreError` (and
    :class:`~bridge.errors.Conflict` for a violated constraint) here and nowhere else."""

    def __init__(self, url: URL) -> None:
        self.url = url
        self._engine: AsyncEngine | None = None

    def __repr__(self) -> str:
        return f"Database({self.name!r})"

    @property
    def name(self) -> str:
        """The URL without its password, for messages."""
        return self.url.render_as_string(hide_password=True)

    @property
    def postgres(self) -> bool:
        return is_postgres(self.url)

    def insert(self, table: Table) -> postgresql.Insert | sqlite.Insert:
        """An INSERT with the dialect's ON CONFLICT clause (both spell it the same)."""
        return postgresql.insert(table) if self.postgres else sqlite.insert(table)

    async def __aenter__(self) -> Database:
        self._engine = await open_engine(self.url)
        try:
            async with migration_lock(), self.transaction(write=True) as conn:
                await conn.run_sync(upgrade_to_head)
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._close()

    async def _close(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            await engine.dispose()

    @asynccontextmanager
    async def transaction(self, *, write: bool) -> AsyncIterator[AsyncConnection]:
        """One transaction, committed when the block ends. A read sees one snapshot
        (REPEATABLE READ on PostgreSQL); a write locks first on SQLite (module docstring)."""
        if self._engine is None:
            raise StoreError(f"state store {self.name!r} is not open (enter it with async with)")
        started = time.monotonic()
        try:
            async with self._engine.connect() as conn:
                if write:
                    await conn.execution_options(**{WRITE: True})
                elif self.postgres:
                    await conn.execution_options(isolation_level="REPEATABLE READ")
                async with conn.begin():
                    yield conn
        except IntegrityError as exc:
            raise Conflict(f"conflicts with the stored state: {exc.orig}") from exc
        except DBAPIError as exc:
            raise StoreError(f"state store {self.name!r} failed: {exc.orig}") from exc
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"state store {self.name!r} failed: {exc}") from exc
        finally:
            # Waiting for a connection or SQLite's write lock, a slow disk's commit: every
            # webhook delivery and admin write waits behind it, so it is said.
            elapsed = time.monotonic() - started
            if elapsed >= SLOW_TRANSACTION_SECONDS:
                log.warning(
                    "state store transaction slow",
                    extra={"seconds": round(elapsed, 3), "write": write},
                )
