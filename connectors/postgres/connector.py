"""The postgres-cdc connector (CONTRACT §7b): the Connector protocol over the per-table
change logs that its poller (``poller.py``) feeds from a logical replication slot.

A table is captured from when it is first watched (subscribed, or ``watch``): changes
before that are not retained. Watched tables are remembered under ``data_dir``, so after a
restart their changes made meanwhile (held by the slot) reach their logs, and resuming by
cursor is exact (``Last-Event-ID`` carries the LSN, ``changes.py``).

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
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import psycopg

from bridge.config import PostgresCdcBroker
from bridge.errors import ConnectorError
from bridge.event import Event
from connectors.base import EARLIEST, AsyncResource, Gap
from connectors.postgres.changes import boundary_cursor
from connectors.postgres.changes import is_after as _is_after
from connectors.postgres.logs import ChangeLogs, TableLog, split_channel, with_gaps
from connectors.postgres.poller import Poller
from connectors.postgres.slot import slot_name
from connectors.postgres.snapshot import SnapshotRows, take_snapshot
from connectors.postgres.values import SESSION_SETTINGS

FIRST_CONNECT = 5.0  # seconds __aenter__ waits for the first round (it never fails)


class PostgresCdcConnector(AsyncResource):
    def __init__(
        self,
        name: str,
        settings: PostgresCdcBroker,
        *,
        retain: int,
        max_age: float,
        max_bytes: int | None = None,
        data_dir: Path | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.retain = retain
        self.max_age = max_age
        self.max_bytes = max_bytes
        self.data_dir = data_dir
        self.slot = slot_name(name, settings, data_dir)
        self._options = " ".join(
            f"-c {k}={v.replace(' ', '')}" for k, v in SESSION_SETTINGS.items()
        )
        self._logs = ChangeLogs(
            self.slot, retain=retain, max_age=max_age, max_bytes=max_bytes, data_dir=data_dir
        )
        self._poller = Poller(name, settings.dsn, self.slot, self._logs, self._options)

    # --- lifecycle ------------------------------------------------------------------------

    async def _open(self, stack: AsyncExitStack) -> None:
        self._logs.load()
        stack.callback(self._logs.close)
        supervisor = await self._supervisor(stack, f"postgres-cdc {self.name}")
        self._poller.closed = False
        stack.callback(self._poller.close)  # first of all on the way out
        supervisor.spawn(f"postgres-cdc-{self.name}", self._poller.run)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FIRST_CONNECT):
                await self._poller.first_round()

    async def ready(self) -> bool:
        return self._poller.ready()

    @property
    def problem(self) -> str | None:
        """Why the connector is not ready, or None."""
        return self._poller.problem

    @property
    def slot_losses(self) -> int:
        return self._poller.slot_losses

    @property
    def reconnects(self) -> int:
        return self._poller.reconnects

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
        stream = state.log.follow(from_cursor, closed=lambda: self._poller.closed)
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

    async def snapshot(self, channel: str) -> tuple[str, SnapshotRows]:
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
                database=self._poller.database,
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
        await self._poller.check_table(schema, table)
        state = self._logs.opened(f"{schema}.{table}") or self._logs.add(schema, table)
        if sync:
            await self._poller.sync()
        return state
