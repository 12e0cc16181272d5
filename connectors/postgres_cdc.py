"""PostgreSQL change data capture (CONTRACT §7b) over logical replication with wal2json.

The connector and its helpers are the only modules importing psycopg: ``pg_slot`` (the
replication slot through the SQL interface), ``pg_changes`` (wal2json rows → envelopes
and LSN cursors), ``pg_types`` (column values → JSON), ``pg_logs`` (the per-table
logs), ``pg_snapshot`` (a table's rows, consistent with the stream).

One slot per connector, owned by the gateway, read by one poller task: psycopg 3 has no
streaming replication protocol, and the SQL functions give the same changes. Each round
peeks the changes of the watched tables up to the flushed end of WAL, decodes them,
appends each to its table's replay log (durable under ``data_dir``), and only then
advances the slot. A crash in between re-reads the same changes, whose cursors the logs
already hold, so nothing is lost or doubled. A round that filled its batch is followed at
once; otherwise the poller sleeps ``POLL_INTERVAL`` (or until a subscriber needs a round).

A table is captured from when it is first watched (subscribed, or ``watch``): changes
before that are not retained. Watched tables are remembered under ``data_dir``, so after a
restart their changes made meanwhile (held by the slot) reach their logs, and resuming by
cursor is exact (``Last-Event-ID`` carries the LSN, ``pg_changes.py``).

Failures are never silent. ``ready()`` is False, with the reason logged at ERROR, while:
the server cannot be reached; ``wal_level`` is not ``logical`` (the message names the fix);
the wal2json plugin is missing or the slot cannot be created; a subscribed table does not
exist or was dropped. Subscribing then raises ConnectorError with that reason. A lost slot
(dropped or invalidated behind our back) is logged at ERROR, counted (``slot_losses``) and
recreated at once (ready again once it is), and every table's log gets a marker there that
followers, and later resumes from before it, see as a ``Gap``: the changes in between are
gone. Tables without a primary key or replica identity are warned about: PostgreSQL logs
nothing of their old rows, and wal2json skips their updates and deletes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Self

import psycopg

from bridge.changes import format_lsn
from bridge.config import PostgresCdcBroker
from bridge.errors import ConnectorError
from bridge.event import Event
from connectors.base import EARLIEST, Gap
from connectors.pg_changes import Commit, Decoder, boundary_cursor
from connectors.pg_changes import is_after as _is_after
from connectors.pg_logs import ChangeLogs, TableLog, split_channel, with_gaps
from connectors.pg_slot import LOST_ERRORS, PLUGIN, Slot, slot_name
from connectors.pg_snapshot import take_snapshot
from connectors.pg_types import SESSION_SETTINGS

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.05  # seconds between rounds that found the slot drained
BATCH = 2000  # rows per peek (whole transactions: a large one may exceed it)
TABLE_CHECK = 5.0  # seconds between checks that watched tables still exist
FIRST_CONNECT = 5.0  # seconds __aenter__ waits for the first round (it never fails)
BACKOFF_MIN, BACKOFF_MAX = 0.2, 10.0


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
        self._logs = ChangeLogs(self.slot, retain=retain, max_age=max_age, data_dir=data_dir)
        self._missing: set[str] = set()
        self._unkeyed: set[str] = set()  # tables warned about: updates/deletes not logged
        self._slot: Slot | None = None  # while connected
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
        self._logs.load()
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
        self._logs.close()
        self._notify()

    async def ready(self) -> bool:
        return self._slot is not None and self._problem is None and not self._missing

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
        async for item in with_gaps(stream, from_cursor):
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
        async for item in with_gaps(stream, from_cursor):
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

    async def watch(self, channel: str, *, sync: bool = True) -> TableLog:
        """Capture table ``channel`` from now on (a no-op when already captured); with
        ``sync``, return once every change committed before the call is in its log.
        Raises ConnectorError when the table does not exist or PostgreSQL is not usable."""
        schema, table = split_channel(channel)
        qualified = f"{schema}.{table}"
        await self._check_table(schema, table)
        state = self._logs.get(qualified) or self._logs.add(schema, table)
        if sync:
            await self._sync()
        return state

    # --- tables ---------------------------------------------------------------------------

    async def _check_table(self, schema: str, table: str) -> None:
        slot = self._slot
        if slot is None:
            raise ConnectorError(f"postgres-cdc {self.name}: {self._problem or 'not connected'}")
        qualified = f"{schema}.{table}"
        try:
            row = await slot.table(schema, table)
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
            if self._closed or (self._slot is None and self._round > 0):
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
            slot = Slot(conn, self.slot)
            try:
                await self._open(slot)
                self._slot = slot
                self._set_problem(None)
                await self._poll_forever(slot)
            finally:
                self._slot = None
                self._round += 1
                self.reconnects += 1

    async def _open(self, slot: Slot) -> None:
        """Check the server and make sure the slot exists."""
        self._database = await slot.server()
        state = await slot.state()
        if state is None:
            lost = "missing at start" if self._logs.holds_changes() else None
            await self._create_slot(slot, lost=lost)
        elif state.plugin != PLUGIN or state.database != self._database:
            raise ConnectorError(
                f"replication slot {self.slot} belongs to plugin {state.plugin} in database "
                f"{state.database}; set another slot name for broker {self.name}",
                retriable=False,
            )
        elif state.confirmed is None or state.wal_status == "lost":
            await self._create_slot(slot, lost=f"invalidated (wal_status {state.wal_status})")
        else:
            self._confirmed = state.confirmed

    async def _create_slot(self, slot: Slot, *, lost: str | None) -> None:
        """Create the slot; ``lost``: why an earlier one is gone (its changes with it)."""
        if lost is not None:
            self.slot_losses += 1
            self._set_problem(f"replication slot {self.slot} was lost ({lost}); recreating it")
        self._confirmed = await slot.create()
        log.info(
            "postgres-cdc %s: created replication slot %s at %s",
            self.name,
            self.slot,
            format_lsn(self._confirmed),
        )
        if lost is not None:
            self._logs.mark_lost(boundary_cursor(self._confirmed), lost, time.time())

    async def _poll_forever(self, slot: Slot) -> None:
        checked = time.monotonic()
        while True:
            self._round += 1
            started = self._round
            self._poke.clear()
            try:
                drained = await self._poll(slot)
            except LOST_ERRORS as error:
                await self._create_slot(slot, lost=str(error).strip())
                self._set_problem(None)
                continue
            if drained:
                self._synced = started
                self._notify()
            if time.monotonic() - checked > TABLE_CHECK:
                checked = time.monotonic()
                await self._check_tables(slot)
            if drained:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._poke.wait(), POLL_INTERVAL)

    async def _poll(self, slot: Slot) -> bool:
        """One round: store what the slot holds, then advance it; whether it was read to
        the end of flushed WAL."""
        tables = [(t.schema, t.table) for t in self._logs]
        flush, rows = await slot.peek(tables, BATCH)
        decoder = Decoder(self._database)
        now = time.time()
        end: int | None = None
        for lsn, xid, data in rows:
            for item in decoder.feed(lsn, xid, data):
                if isinstance(item, Commit):
                    end = item.end_lsn
                else:
                    self._logs.store(item, now)
        drained = len(rows) < BATCH
        target = flush if drained else end
        if target is not None and target > self._confirmed:
            await slot.advance(target)
            self._confirmed = target
        return drained

    async def _check_tables(self, slot: Slot) -> None:
        for qualified in sorted(set(self._logs.tables) | self._missing):
            if await slot.table(*split_channel(qualified)) is not None:
                self._missing.discard(qualified)
            elif qualified not in self._missing:
                self._missing.add(qualified)
                log.error("postgres-cdc %s: watched table %s was dropped", self.name, qualified)
