"""The event loop watch: a callback that holds the loop is logged with how long."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from gateway.stall import watch_loop


async def test_a_held_loop_is_logged_and_a_free_one_is_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="streambridge.runtime")
    watch = asyncio.create_task(watch_loop(None, tick=0.02, stall=0.5))
    try:
        # Free: the watch wakes on time (the bound leaves a busy test machine room).
        await asyncio.sleep(0.3)
        assert not caplog.records
        await asyncio.sleep(0.05)
        time.sleep(0.8)  # a blocking call on the loop
        await asyncio.sleep(0.1)
    finally:
        watch.cancel()
    (record,) = caplog.records
    assert record.getMessage() == "the event loop was held up"
    assert record.seconds >= 0.5  # type: ignore[attr-defined]
