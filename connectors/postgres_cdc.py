"""PostgreSQL change data capture (CONTRACT §7b) over logical replication with wal2json;
the only module, with its ``pg_snapshot`` helper, that talks to PostgreSQL for it.

One replication slot per connector, owned by the gateway (``pg_create_logical_replication
_slot(slot, 'wal2json')``), read by one poller task through the SQL interface: psycopg 3
has no streaming replication protocol, and the SQL functions give the same changes. Each
round peeks the slot's changes of the watched tables (``pg_logical_slot_peek_changes``
with ``add-tables``) up to the flushed end of WAL, decodes them (``pg_changes.py``) into
envelopes, appends each to its table's replay log (durable under ``data_dir``), and only
then advances the slot (``pg_replication_slot_advance``). A crash in between re-reads the
same changes, whose cursors the logs already hold, so nothing is lost or doubled. A round
that filled its batch is followed at once; otherwise the poller sleeps ``POLL_INTERVAL``.

A table is captured from when it is first watched (subscribed, or ``watch``): changes
before that are not retained. Watched tables are remembered under ``data_dir``, so after a
restart their changes made meanwhile (held by the slot) reach their logs, and resuming by
cursor is exact (``Last-Event-ID`` carries the LSN, ``pg_changes.py``).

Failures are never silent. ``ready()`` is False, with the reason logged at ERROR, while:
the server cannot be reached; ``wal_level`` is not ``logical`` (the message names the fix);
the wal2json plugin is missing; a subscribed table does not exist; or the slot was lost.
A lost slot (dropped or invalidated behind our back) is recreated, and every table's log
gets a marker there that followers see as a ``Gap``: the changes in between are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import psycopg
from psycopg import errors as pg_errors

from bridge.changes import format_lsn, parse_lsn
from bridge.config import PostgresCdcBroker
from bridge.errors import ConnectorError
from bridge.event import Event
from connectors.base import EARLIEST, Gap
from connectors.pg_changes import PREFIX, Change, Commit, Decoder, boundary_cursor
from connectors.pg_changes import is_after as _is_after
from connectors.pg_snapshot import take_snapshot
from connectors.pg_types import SESSION_SETTINGS
from connectors.replay import ReplayLog, log_path

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.05  # seconds between rounds that found the slot drained
BATCH = 2000  # rows per peek (whole transactions: a large one may exceed it)
TABLE_CHECK = 5.0  # seconds between checks that watched tables still exist
FIRST_CONNECT = 5.0  # seconds __aenter__ waits for the first round (it never fails)
BACKOFF_MIN, BACKOFF_MAX = 0.2, 10.0
LOST = "streambridge-cdc-lost"  # header of the marker a lost slot leaves in each log
_NO_TABLE = "pg_catalog.streambridge_no_table"  # an add-tables filter that matches nothing

# A table's replica identity and whether it has a primary key; no row when it is missing.
_TABLE = """
SELECT c.relreplident::text,
       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
FROM pg_class c WHERE c.oid = to_regclass(format('%%I.%%I', %s::text, %s::text))
"""
SERVER_SETTINGS = "SELECT current_setting('wal_level'), current_database()"
_PEEK = """
SELECT lsn::text, xid::text, data FROM pg_logical_slot_peek_changes(
    %s, %s::pg_lsn, %s,
    'format-version', '2', 'include-lsn', 'true', 'include-timestamp', 'true',
    'include-types', 'true', 'include-pk', 'true', 'include-transaction', 'true',
    'add-tables', %s)
"""


def check_wal_level(value: str) -> None:
    """Raise the error a server with ``wal_level`` = ``value`` gives (CONTRACT §7b)."""
    if value != "logical":
        raise ConnectorError(
            f"PostgreSQL wal_level is {value!r}; change data capture needs wal_level = "
            "logical: set it in postgresql.conf (or ALTER SYSTEM SET wal_level = logical) "
            "and restart PostgreSQL",
            retriable=False,
        )


def split_channel(channel: str) -> tuple[str, str]:
    """``schema.table`` (a name without a schema is in ``public``)."""
    schema, dot, table = channel.partition(".")
    return (schema, table) if dot else ("public", channel)


def slot_name(name: str, settings: PostgresCdcBroker, data_dir: Path | None) -> str:
    """The configured ``slot``, or one per broker and data directory."""
    if "slot" in settings.model_fields_set:
        return settings.slot
    digest = hashlib.sha256(f"{name}\0{data_dir or ''}".encode()).hexdigest()[:8]
    safe = re.sub(r"[^a-z0-9_]", "_", name.lower())[:40]
    return f"{settings.slot}_{safe}_{digest}"


def _escape(name: str) -> str:
    """A name as wal2json's ``add-tables`` reads it."""
    return re.sub(r"([\\ ',.*])", r"\\\1", name)


@dataclass
class _Table:
    schema: str
    table: str
    log: ReplayLog
    high: str | None  # cursor of the newest change stored (never decreases)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"


class PostgresCdcConnector:
    def __init__(
        self,
        name: str,
        settings: PostgresCdcBroker,
        *,
        retain: int,
        max_age: float,
        data_dir: Path | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.retain = retain
        self.max_age = max_age
        self.data_dir = data_dir
        self.slot = slot_name(name, settings, data_dir)
        self.slot_losses = 0
        self.reconnects = 0
        self._options = " ".join(
            f"-c {k}={v.replace(' ', '')}" for k, v in SESSION_SETTINGS.items()
        )
        self._tables: dict[str, _Table] = {}
        self._missing: set[str] = set()
        self._unkeyed: set[str] = set()  # tables warned about: updates/deletes not logged
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._database = ""
        self._confirmed = 0
        self._problem: str | None = "not connected yet"
        self._reported: str | None = None
        self._round = 0  # poll rounds started
        self._synced = 0  # the latest round that read the slot to the end
        self._progress = asyncio.Event()  # replaced after each round, so waiters re-check
        self._poke = asyncio.Event()
        self._failed_at = 0  # self._synced when the poller last failed
        self._runner: asyncio.Task[None] | None = None
        self._closed = False

    # --- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._closed = False
        for qualified in self._remembered():
            self._add_table(*split_channel(qualified), remember=False)
        self._runner = asyncio.create_task(self._run(), name=f"postgres-cdc-{self.name}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first_round(), FIRST_CONNECT)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closed = True
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        for state in self._tables.values():
            state.log.close()
        self._notify()

    async def ready(self) -> bool:
        return self._conn is not None and self._problem is None and not self._missing

    @property
    def problem(self) -> str | None:
        """Why the connector is not ready, or None."""
        if self._problem is not None:
            return self._problem
        if self._missing:
            return f"missing table(s): {', '.join(sorted(self._missing))}"
        return None

    # --- the Connector protocol -----------------------------------------------------------

    async def publish(self, channel: str, event: Event) -> None:
        raise ConnectorError(
            f"broker {self.name} (postgres-cdc) is read-only: topics on it can only be "
            "subscribed; write to the table instead",
            retriable=False,
        )

    async def subscribe(
        self, channel: str, from_cursor: str | None = None
    ) -> AsyncIterator[Event | Gap]:
        """Changes of table ``channel`` after ``from_cursor`` (None: everything committed
        after this call), then live."""
        state = await self.watch(channel)
        stream = state.log.follow(from_cursor, closed=lambda: self._closed)
        async for item in _with_gaps(stream, from_cursor):
            yield item

    async def read_range(
        self,
        channel: str,
        from_cursor: str,
        until_cursor: str | None,
        *,
        max_events: int | None = None,
        max_age: float | None = None,
    ) -> AsyncIterator[Event | Gap]:
        """Changes after ``from_cursor`` up to and including ``until_cursor`` (None or
        EARLIEST, as ``position`` gives for an empty log: nothing is before it), then the
        end; ``max_events``/``max_age`` narrow the retained window (an API's ``replay``)."""
        state = await self.watch(channel, sync=False)
        until = None if until_cursor == EARLIEST else until_cursor
        stream = state.log.read_range(from_cursor, until, max_events=max_events, max_age=max_age)
        async for item in _with_gaps(stream, from_cursor):
            yield item

    async def position(self, channel: str) -> str:
        """Where a subscription gets exactly the changes committed after this call: the
        cursor of the newest change stored once all before the call are, or EARLIEST while
        the table's log holds none (so nothing falls between this call and a subscribe)."""
        state = await self.watch(channel)
        return state.log.position or EARLIEST

    async def snapshot(self, channel: str) -> tuple[str, AsyncIterator[Event]]:
        """A boundary cursor and the table's rows as ``op: "r"`` events (cursor None): a
        change is reflected in the rows exactly when ``is_after(its cursor, boundary)`` is
        False. Exhaust the rows or ``aclose()`` them: they hold a connection."""
        state = await self.watch(channel)
        try:
            consistent_point, rows = await take_snapshot(
                self.settings.dsn,
                state.schema,
                state.table,
                channel=state.qualified,
                database=self._database,
                options=self._options,
            )
        except psycopg.Error as error:
            raise ConnectorError(
                f"postgres-cdc {self.name}: snapshot of {channel}: {error}"
            ) from error
        return boundary_cursor(consistent_point), rows

    @staticmethod
    def is_after(cursor: str, boundary: str) -> bool:
        """Whether the change at ``cursor`` comes after ``boundary`` (e.g. a snapshot's)."""
        return _is_after(cursor, boundary)

    async def watch(self, channel: str, *, sync: bool = True) -> _Table:
        """Capture table ``channel`` from now on (a no-op when already captured); with
        ``sync``, return once every change committed before the call is in its log.
        Raises ConnectorError when the table does not exist or PostgreSQL is not usable."""
        schema, table = split_channel(channel)
        qualified = f"{schema}.{table}"
        await self._check_table(schema, table)
        state = self._tables.get(qualified) or self._add_table(schema, table)
        if sync:
            await self._sync()
        return state

    # --- tables ---------------------------------------------------------------------------

    def _tables_file(self) -> Path | None:
        if self.data_dir is None:
            return None
        return self.data_dir / "postgres-cdc" / f"{self.slot}.tables.json"

    def _remembered(self) -> list[str]:
        path = self._tables_file()
        if path is None or not path.exists():
            return []
        with contextlib.suppress(ValueError, OSError):
            names = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(names, list):
                return [n for n in names if isinstance(n, str)]
        log.warning("postgres-cdc %s: cannot read %s; no table is watched yet", self.name, path)
        return []

    def _add_table(self, schema: str, table: str, *, remember: bool = True) -> _Table:
        qualified = f"{schema}.{table}"
        path = log_path(self.data_dir, f"postgres-cdc-{self.slot}", qualified)
        replay = ReplayLog(PREFIX.rstrip(":"), retain=self.retain, max_age=self.max_age, path=path)
        position = replay.position
        state = _Table(
            schema, table, replay, position if position and position.startswith(PREFIX) else None
        )
        self._tables[qualified] = state
        path_ = self._tables_file()
        if remember and path_ is not None:
            path_.parent.mkdir(parents=True, exist_ok=True)
            temporary = path_.with_suffix(".tmp")
            temporary.write_text(json.dumps(sorted(self._tables)), encoding="utf-8")
            temporary.replace(path_)
        return state

    async def _check_table(self, schema: str, table: str) -> None:
        conn = self._conn
        if conn is None:
            raise ConnectorError(f"postgres-cdc {self.name}: {self._problem or 'not connected'}")
        qualified = f"{schema}.{table}"
        try:
            found = await conn.execute(_TABLE, (schema, table))
            row = await found.fetchone()
        except psycopg.Error as error:
            raise ConnectorError(f"postgres-cdc {self.name}: {error}") from error
        if row is not None:
            self._missing.discard(qualified)
            identity, has_key = row
            if (identity == "n" or (identity == "d" and not has_key)) and (
                qualified not in self._unkeyed
            ):
                # wal2json skips such updates and deletes (a warning in the server's log).
                self._unkeyed.add(qualified)
                log.warning(
                    "postgres-cdc %s: table %s has no primary key and no replica identity: "
                    "its updates and deletes are NOT captured, only inserts; run ALTER TABLE "
                    "%s REPLICA IDENTITY FULL (or add a primary key)",
                    self.name,
                    qualified,
                    qualified,
                )
            return
        if qualified not in self._missing:
            self._missing.add(qualified)
            log.error(
                "postgres-cdc %s: table %s does not exist in database %s",
                self.name,
                qualified,
                self._database,
            )
        raise ConnectorError(
            f"postgres-cdc {self.name}: table {qualified} does not exist in database "
            f"{self._database} (a topic's channel names schema.table)"
        )

    # --- the poller -----------------------------------------------------------------------

    def _notify(self) -> None:
        progress, self._progress = self._progress, asyncio.Event()
        progress.set()

    def _set_problem(self, problem: str | None) -> None:
        self._problem = problem
        if problem is not None and problem != self._reported:
            log.error("postgres-cdc %s: %s", self.name, problem)
        self._reported = problem
        self._notify()

    async def _sync(self) -> None:
        """Wait until a round that started after this call read the slot to its end."""
        target = self._round + 1
        self._poke.set()
        while self._synced < target:
            if self._closed or (self._conn is None and self._round > 0):
                raise ConnectorError(f"postgres-cdc {self.name}: {self._problem or 'closed'}")
            await self._progress.wait()

    async def _first_round(self) -> None:
        while self._synced == 0 and (self._round == 0 or self._problem is None):
            await self._progress.wait()

    async def _run(self) -> None:
        """Connect, poll until something fails, report it, back off, again."""
        failures = 0
        while not self._closed:
            try:
                await self._connected()
            except ConnectorError as error:
                self._set_problem(str(error))
            except psycopg.Error as error:
                self._set_problem(f"PostgreSQL: {error}".strip())
            except Exception as error:  # a bug here must not stop the feed silently
                log.exception("postgres-cdc %s: poller failed", self.name)
                self._set_problem(f"poller failed: {error!r}")
            failures = 1 if self._synced > self._failed_at else failures + 1
            self._failed_at = self._synced
            await asyncio.sleep(min(BACKOFF_MAX, BACKOFF_MIN * 2 ** min(failures, 10)))

    async def _connected(self) -> None:
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.settings.dsn,
                autocommit=True,
                options=self._options,
                application_name=f"streambridge-cdc-{self.name}",
                connect_timeout=5,
            )
        except psycopg.Error as error:
            self._round += 1
            raise ConnectorError(f"cannot connect to PostgreSQL: {error}".strip()) from error
        async with conn:
            try:
                await self._open(conn)
                self._conn = conn
                self._set_problem(None)
                await self._poll_forever(conn)
            finally:
                self._conn = None
                self._round += 1
                self.reconnects += 1

    async def _open(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Check the server and make sure the slot exists."""
        checked = await conn.execute(SERVER_SETTINGS)
        row = await checked.fetchone()
        assert row is not None
        check_wal_level(row[0])
        self._database = row[1]
        found = await conn.execute(
            "SELECT plugin, database, confirmed_flush_lsn::text, wal_status "
            "FROM pg_replication_slots WHERE slot_name = %s",
            (self.slot,),
        )
        slot = await found.fetchone()
        if slot is None:
            stored = any(state.high is not None for state in self._tables.values())
            await self._create_slot(conn, lost="missing at start" if stored else None)
        elif slot[0] != "wal2json" or slot[1] != self._database:
            raise ConnectorError(
                f"replication slot {self.slot} belongs to plugin {slot[0]} in database "
                f"{slot[1]}; set another slot name for broker {self.name}",
                retriable=False,
            )
        elif slot[3] == "lost" or slot[2] is None:
            await self._create_slot(conn, lost=f"invalidated (wal_status {slot[3]})")
        else:
            self._confirmed = parse_lsn(slot[2])

    async def _create_slot(self, conn: psycopg.AsyncConnection[Any], *, lost: str | None) -> None:
        """Create the slot; ``lost``: why an earlier one is gone (its changes with it)."""
        if lost is not None:
            self.slot_losses += 1
            self._set_problem(f"replication slot {self.slot} was lost ({lost}); recreating it")
            with contextlib.suppress(pg_errors.UndefinedObject):
                await conn.execute("SELECT pg_drop_replication_slot(%s)", (self.slot,))
        try:
            created = await conn.execute(
                "SELECT lsn::text FROM pg_create_logical_replication_slot(%s, 'wal2json')",
                (self.slot,),
            )
        except pg_errors.UndefinedFile as error:
            raise ConnectorError(
                "the wal2json output plugin is not installed on the PostgreSQL server "
                f"(Debian: apt-get install postgresql-15-wal2json): {error}",
                retriable=False,
            ) from error
        except pg_errors.ConfigurationLimitExceeded as error:
            raise ConnectorError(f"{error} (raise max_replication_slots)") from error
        row = await created.fetchone()
        assert row is not None
        self._confirmed = parse_lsn(row[0])
        log.info("postgres-cdc %s: created replication slot %s at %s", self.name, self.slot, row[0])
        if lost is not None:
            marker = boundary_cursor(self._confirmed)
            now = time.time()
            for state in self._tables.values():
                event = Event(state.qualified, {"lost": lost}, headers={LOST: lost})
                state.log.append(event, now, marker)
                state.high = marker

    async def _poll_forever(self, conn: psycopg.AsyncConnection[Any]) -> None:
        checked = time.monotonic()
        while True:
            self._round += 1
            started = self._round
            self._poke.clear()
            try:
                drained = await self._poll(conn)
            except (pg_errors.UndefinedObject, pg_errors.ObjectNotInPrerequisiteState) as error:
                await self._create_slot(conn, lost=str(error).strip())
                self._set_problem(None)
                continue
            if drained:
                self._synced = started
                self._notify()
            if time.monotonic() - checked > TABLE_CHECK:
                checked = time.monotonic()
                await self._check_tables(conn)
            if drained:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._poke.wait(), POLL_INTERVAL)

    async def _poll(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        """One round; whether it read the slot to the end of flushed WAL."""
        filter_ = ",".join(f"{_escape(s.schema)}.{_escape(s.table)}" for s in self._tables.values())
        flushed = await conn.execute("SELECT pg_current_wal_flush_lsn()::text")
        row = await flushed.fetchone()
        assert row is not None
        flush = parse_lsn(row[0])
        peeked = await conn.execute(_PEEK, (self.slot, row[0], BATCH, filter_ or _NO_TABLE))
        rows = await peeked.fetchall()
        decoder = Decoder(self._database)
        now = time.time()
        end: int | None = None
        for lsn, xid, data in rows:
            for item in decoder.feed(lsn, xid, data):
                if isinstance(item, Commit):
                    end = item.end_lsn
                else:
                    self._store(item, now)
        drained = len(rows) < BATCH
        target = flush if drained else end
        if target is not None and target > self._confirmed:
            await conn.execute(
                "SELECT pg_replication_slot_advance(%s, %s::pg_lsn)",
                (self.slot, format_lsn(target)),
            )
            self._confirmed = target
        return drained

    def _store(self, change: Change, now: float) -> None:
        state = self._tables.get(change.qualified)
        if state is None:  # watched after this round began: captured from the next one
            return
        if state.high is not None and change.cursor <= state.high:
            return  # stored before a restart that came before the slot was advanced
        key = json.dumps(change.key, separators=(",", ":")) if change.key is not None else None
        event = Event(change.qualified, change.envelope, key=key, time=change.time)
        state.log.append(event, now, change.cursor)
        state.high = change.cursor

    async def _check_tables(self, conn: psycopg.AsyncConnection[Any]) -> None:
        for qualified in sorted(set(self._tables) | self._missing):
            schema, table = split_channel(qualified)
            found = await conn.execute(_TABLE, (schema, table))
            if await found.fetchone() is not None:
                self._missing.discard(qualified)
            elif qualified not in self._missing:
                self._missing.add(qualified)
                log.error("postgres-cdc %s: watched table %s was dropped", self.name, qualified)


async def _with_gaps(
    stream: AsyncIterator[Event | Gap], from_cursor: str | None
) -> AsyncIterator[Event | Gap]:
    """A log's items, with the marker a lost slot left turned into a Gap."""
    last = from_cursor
    try:
        async for item in stream:
            if isinstance(item, Event) and LOST in item.headers:
                yield Gap(last or "", item.cursor)
            else:
                yield item
            if isinstance(item, Event):
                last = item.cursor
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
