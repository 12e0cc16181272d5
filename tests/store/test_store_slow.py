"""A state store transaction that takes long (here: a second writer queued behind SQLite's
write lock) is logged with how long it took, so an operator sees why webhooks wait."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from sqlalchemy import text

from bridge.store import engine
from bridge.store.engine import Database, engine_url


async def test_a_writer_held_up_by_another_is_logged_as_slow(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Well above a quick transaction on a busy test machine, well below the lock held.
    monkeypatch.setattr(engine, "SLOW_TRANSACTION_SECONDS", 0.5)
    caplog.set_level(logging.WARNING, logger="streambridge.store")
    async with Database(engine_url(f"sqlite:///{tmp_path}/state.db")) as db:
        opened = len(caplog.records)  # its migration may have been slow too
        holding = asyncio.Event()

        async def hold_the_lock() -> None:
            async with db.transaction(write=True) as conn:
                await conn.execute(text("SELECT 1"))
                holding.set()
                await asyncio.sleep(1.0)  # holding the write lock this long

        async def write_after_it() -> None:
            await holding.wait()
            async with db.transaction(write=True) as conn:
                await conn.execute(text("SELECT 1"))

        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(hold_the_lock())
            tasks.create_task(write_after_it())

        quick_before = len(caplog.records)
        async with db.transaction(write=True) as conn:
            await conn.execute(text("SELECT 1"))

    slow = [r for r in caplog.records[opened:] if r.getMessage() == "state store transaction slow"]
    assert len(slow) == 2  # the holder and the writer behind it
    assert all(r.write is True and r.seconds >= 0.5 for r in slow)  # type: ignore[attr-defined]
    assert len(caplog.records) == quick_before  # a quick one is not logged
