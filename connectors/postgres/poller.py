"""The poller of a postgres-cdc connector: one task reading the replication slot into the
per-table logs (CONTRACT §7b).

One slot per connector, owned by the gateway, read by one poller task: psycopg 3 has no
streaming replication protocol, and the SQL functions give the same changes. Each round
peeks the changes of the watched tables up to the flushed end of WAL, decodes them,
appends each to its table's replay log (durable under ``data_dir``), and only then
advances the slot. A crash in between re-reads the same changes, whose cursors the logs
already hold, so nothing is lost or doubled. A round that filled its batch is followed at
once; otherwise the poller sleeps ``POLL_INTERVAL`` (or until a subscriber needs a round).

Failures are never silent: every connection or server problem is kept as ``problem``
(logged at ERROR once) and the poller reconnects with backoff; a lost slot is recreated
and every table's log gets a marker (``logs.py``). Anything else ends ``run`` and is the
supervisor's to log and restart (``bridge/supervision.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import psycopg

from bridge.changes import format_lsn
from bridge.errors import ConnectorError
from connectors.postgres.changes import Commit, Decoder, boundary_cursor
from connectors.postgres.logs import ChangeLogs, split_channel
from connectors.postgres.slot import LOST_ERRORS, PLUGIN, Slot

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.05  # seconds between rounds that found the slot drained
BATCH = 2000  # rows per peek (whole transactions: a large one may exceed it)
TABLE_CHECK = 5.0  # seconds between checks that watched tables still exist
BACKOFF_MIN, BACKOFF_MAX = 0.2, 10.0


class Poller:
    """Keeps ``logs`` fed from slot ``slot_name``; says whether it can (``problem``)."""

    def __init__(self, name: str, dsn: str, slot_name: str, logs: ChangeLogs, options: str):
        self.name = name
        self.dsn = dsn
        self.slot_name = slot_name
        self.logs = logs
        self.options = options
        self.slot: Slot | None = None  # while connected
        self.database = ""
        self.slot_losses = 0
        self.reconnects = 0
        self.closed = False
        self.missing: set[str] = set()  # watched tables that do not exist
        self._unkeyed: set[str] = set()  # tables warned about: updates/deletes not logged
        self._confirmed = 0
        self._problem: str | None = "not connected yet"
        self._reported: str | None = None
        self._round = 0  # poll rounds started
        self._synced = 0  # the latest round that read the slot to the end
        self._progress = asyncio.Event()  # replaced after each round, so waiters re-check
        self._poke = asyncio.Event()
        self._failed_at = 0  # self._synced when the poller last failed

    @property
    def problem(self) -> str | None:
        """Why the connector is not ready, or None."""
        if self._problem is not None:
            return self._problem
        if self.missing:
            return f"missing table(s): {', '.join(sorted(self.missing))}"
        return None

    def ready(self) -> bool:
        return self.slot is not None and self._problem is None and not self.missing

    def close(self) -> None:
        self.closed = True
        self._notify()

    # --- tables ---------------------------------------------------------------------------

    async def check_table(self, schema: str, table: str) -> None:
        """Raise ConnectorError unless ``schema.table`` exists (and PostgreSQL is usable);
        warn once about a table whose updates and deletes PostgreSQL does not log."""
        slot = self.slot
        if slot is None:
            raise ConnectorError(f"postgres-cdc {self.name}: {self._problem or 'not connected'}")
        qualified = f"{schema}.{table}"
        try:
            row = await slot.table(schema, table)
        except psycopg.Error as error:
            raise ConnectorError(f"postgres-cdc {self.name}: {error}") from error
        if row is not None:
            self.missing.discard(qualified)
            identity, has_key = row
            if (identity == "n" or (identity == "d" and not has_key)) and (
                qualified not in self._unkeyed
            ):
                # wal2json skips such updates and deletes (a warning in the server's log).
                self._unkeyed.add(qualified)
                log.warning(
                    "table has no primary key and no replica identity: its updates and "
                    "deletes are NOT captured, only inserts; run ALTER TABLE <table> REPLICA "
                    "IDENTITY FULL (or add a primary key)",
                    extra={"broker": self.name, "table": qualified},
                )
            return
        if qualified not in self.missing:
            self.missing.add(qualified)
            log.error(
                "table does not exist",
                extra={"broker": self.name, "table": qualified, "database": self.database},
            )
        raise ConnectorError(
            f"postgres-cdc {self.name}: table {qualified} does not exist in database "
            f"{self.database} (a topic's channel names schema.table)"
        )

    async def _check_tables(self, slot: Slot) -> None:
        for qualified in sorted(set(self.logs.watched()) | self.missing):
            if await slot.table(*split_channel(qualified)) is not None:
                self.missing.discard(qualified)
            elif qualified not in self.missing:
                self.missing.add(qualified)
                log.error(
                    "watched table was dropped", extra={"broker": self.name, "table": qualified}
                )

    # --- rounds ---------------------------------------------------------------------------

    def _notify(self) -> None:
        progress, self._progress = self._progress, asyncio.Event()
        progress.set()

    def _set_problem(self, problem: str | None) -> None:
        self._problem = problem
        if problem is not None and problem != self._reported:
            log.error(problem, extra={"broker": self.name})
        self._reported = problem
        self._notify()

    async def sync(self) -> None:
        """Wait until a round that started after this call read the slot to its end."""
        target = self._round + 1
        self._poke.set()
        while self._synced < target:
            if self.closed or (self.slot is None and self._round > 0):
                raise ConnectorError(f"postgres-cdc {self.name}: {self._problem or 'closed'}")
            await self._progress.wait()

    async def first_round(self) -> None:
        while self._synced == 0 and (self._round == 0 or self._problem is None):
            await self._progress.wait()

    async def run(self) -> None:
        """Connect, poll until something fails, report it, back off, again."""
        failures = 0
        try:
            while not self.closed:
                try:
                    await self._connected()
                except ConnectorError as error:
                    self._set_problem(str(error))
                except psycopg.Error as error:
                    self._set_problem(f"PostgreSQL: {error}".strip())
                failures = 1 if self._synced > self._failed_at else failures + 1
                self._failed_at = self._synced
                await asyncio.sleep(min(BACKOFF_MAX, BACKOFF_MIN * 2 ** min(failures, 10)))
        finally:
            if not self.closed:  # a bug: the supervisor logs it and starts the poller again
                self._set_problem("the poller failed; restarting it")

    async def _connected(self) -> None:
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.dsn,
                autocommit=True,
                options=self.options,
                application_name=f"streambridge-cdc-{self.name}",
                connect_timeout=5,
            )
        except psycopg.Error as error:
            self._round += 1
            raise ConnectorError(f"cannot connect to PostgreSQL: {error}".strip()) from error
        async with conn:
            slot = Slot(conn, self.slot_name)
            try:
                await self._open(slot)
                self.slot = slot
                self._set_problem(None)
                await self._poll_forever(slot)
            finally:
                self.slot = None
                self._round += 1
                self.reconnects += 1

    async def _open(self, slot: Slot) -> None:
        """Check the server and make sure the slot exists."""
        self.database = await slot.server()
        state = await slot.state()
        if state is None:
            lost = "missing at start" if self.logs.holds_changes() else None
            await self._create_slot(slot, lost=lost)
        elif state.plugin != PLUGIN or state.database != self.database:
            raise ConnectorError(
                f"replication slot {self.slot_name} belongs to plugin {state.plugin} in "
                f"database {state.database}; set another slot name for broker {self.name}",
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
            self._set_problem(f"replication slot {self.slot_name} was lost ({lost}); recreating it")
        self._confirmed = await slot.create()
        log.info(
            "created replication slot",
            extra={"broker": self.name, "slot": self.slot_name, "lsn": format_lsn(self._confirmed)},
        )
        if lost is not None:
            self.logs.mark_lost(boundary_cursor(self._confirmed), lost, time.time())

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
                    async with asyncio.timeout(POLL_INTERVAL):
                        await self._poke.wait()

    async def _poll(self, slot: Slot) -> bool:
        """One round: store what the slot holds, then advance it; whether it was read to
        the end of flushed WAL."""
        tables = [split_channel(qualified) for qualified in self.logs.watched()]
        flush, rows = await slot.peek(tables, BATCH)
        decoder = Decoder(self.database)
        now = time.time()
        end: int | None = None
        for lsn, xid, data in rows:
            for item in decoder.feed(lsn, xid, data):
                if isinstance(item, Commit):
                    end = item.end_lsn
                else:
                    self.logs.store(item, now)
        drained = len(rows) < BATCH
        target = flush if drained else end
        if target is not None and target > self._confirmed:
            await slot.advance(target)
            self._confirmed = target
        return drained
