"""The connector's logical replication slot, read through PostgreSQL's SQL functions
(psycopg 3 has no streaming replication protocol), and the server checks around it.

Changes are peeked (``pg_logical_slot_peek_changes``, wal2json format-version 2, only the
watched tables via ``add-tables``) up to the end of flushed WAL, and the slot is advanced
(``pg_replication_slot_advance``) separately, once the caller has stored them. A peek
returns whole transactions; when it was not cut by the batch size, every transaction that
committed before the flushed end it was bounded by is in it, so the slot may advance there.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from bridge.changes import format_lsn, parse_lsn
from bridge.config import PostgresCdcBroker
from bridge.errors import ConnectorError

PLUGIN = "wal2json"
_NO_TABLE = "pg_catalog.streambridge_no_table"  # an add-tables filter that matches nothing

SERVER_SETTINGS = "SELECT current_setting('wal_level'), current_database()"
# A table's replica identity and whether it has a primary key; no row when it is missing.
_TABLE = """
SELECT c.relreplident::text,
       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
FROM pg_class c WHERE c.oid = to_regclass(format('%%I.%%I', %s::text, %s::text))
"""
_PEEK = """
SELECT lsn::text, xid::text, data FROM pg_logical_slot_peek_changes(
    %s, %s::pg_lsn, %s,
    'format-version', '2', 'include-lsn', 'true', 'include-timestamp', 'true',
    'include-types', 'true', 'include-pk', 'true', 'include-transaction', 'true',
    'add-tables', %s)
"""

# Errors of a peek or advance that mean the slot is gone (dropped, or invalidated).
LOST_ERRORS = (pg_errors.UndefinedObject, pg_errors.ObjectNotInPrerequisiteState)


def check_wal_level(value: str) -> None:
    """Raise the error a server with ``wal_level`` = ``value`` gives (CONTRACT §7b)."""
    if value != "logical":
        raise ConnectorError(
            f"PostgreSQL wal_level is {value!r}; change data capture needs wal_level = "
            "logical: set it in postgresql.conf (or ALTER SYSTEM SET wal_level = logical) "
            "and restart PostgreSQL",
            retriable=False,
        )


def slot_name(name: str, settings: PostgresCdcBroker, data_dir: Path | None) -> str:
    """The configured ``slot``, or one per broker and data directory (by absolute path)."""
    if "slot" in settings.model_fields_set:
        return settings.slot
    where = str(data_dir.resolve()) if data_dir is not None else ""
    digest = hashlib.sha256(f"{name}\0{where}".encode()).hexdigest()[:8]
    safe = re.sub(r"[^a-z0-9_]", "_", name.lower())[:40]
    return f"{settings.slot}_{safe}_{digest}"


def tables_filter(tables: Iterable[tuple[str, str]]) -> str:
    """(schema, table) pairs as wal2json's ``add-tables`` reads them."""

    def escape(name: str) -> str:
        return re.sub(r"([\\ ',.*])", r"\\\1", name)

    return ",".join(f"{escape(s)}.{escape(t)}" for s, t in tables) or _NO_TABLE


@dataclass(frozen=True, slots=True)
class SlotState:
    plugin: str
    database: str
    confirmed: int | None  # None when invalidated
    wal_status: str | None


class Slot:
    """One logical slot, used over one autocommit connection."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], name: str) -> None:
        self.conn = conn
        self.name = name

    async def server(self) -> str:
        """Check ``wal_level``; the current database's name."""
        checked = await self.conn.execute(SERVER_SETTINGS)
        row = await checked.fetchone()
        assert row is not None
        check_wal_level(row[0])
        return str(row[1])

    async def state(self) -> SlotState | None:
        found = await self.conn.execute(
            "SELECT plugin, database, confirmed_flush_lsn::text, wal_status "
            "FROM pg_replication_slots WHERE slot_name = %s",
            (self.name,),
        )
        row = await found.fetchone()
        if row is None:
            return None
        plugin, database, confirmed, wal_status = row
        return SlotState(plugin, database, parse_lsn(confirmed) if confirmed else None, wal_status)

    async def create(self) -> int:
        """Create the slot (dropping a leftover of the same name); its start LSN."""
        with_slot = await self.state()
        if with_slot is not None:
            await self.conn.execute("SELECT pg_drop_replication_slot(%s)", (self.name,))
        try:
            created = await self.conn.execute(
                "SELECT lsn::text FROM pg_create_logical_replication_slot(%s, %s)",
                (self.name, PLUGIN),
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
        return parse_lsn(row[0])

    async def peek(
        self, tables: Iterable[tuple[str, str]], batch: int
    ) -> tuple[int, list[tuple[str, str | None, str]]]:
        """The end of flushed WAL and the (lsn, xid, data) rows of the changes of
        ``tables`` committed before it, at most about ``batch`` (whole transactions)."""
        flushed = await self.conn.execute("SELECT pg_current_wal_flush_lsn()::text")
        row = await flushed.fetchone()
        assert row is not None
        peeked = await self.conn.execute(_PEEK, (self.name, row[0], batch, tables_filter(tables)))
        return parse_lsn(row[0]), await peeked.fetchall()

    async def advance(self, lsn: int) -> None:
        await self.conn.execute(
            "SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (self.name, format_lsn(lsn))
        )

    async def table(self, schema: str, table: str) -> tuple[str, bool] | None:
        """A table's replica identity (``d``, ``n``, ``f``, ``i``) and whether it has a
        primary key; None when it does not exist."""
        found = await self.conn.execute(_TABLE, (schema, table))
        row = await found.fetchone()
        return None if row is None else (str(row[0]), bool(row[1]))
