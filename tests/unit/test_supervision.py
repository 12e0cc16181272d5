"""The supervisor restarts a failing task with backoff, counts and names it, and cancels
every task when its block ends."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from bridge.supervision import Supervisor


async def test_a_failing_task_is_restarted_counted_and_named() -> None:
    failures: list[str] = []
    runs = 0
    healthy = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs <= 3:
            raise RuntimeError(f"boom {runs}")
        healthy.set()
        await asyncio.Event().wait()

    async with Supervisor("test", on_failure=failures.append, first_delay=0.001) as sup:
        sup.spawn("flaky", flaky)
        await asyncio.wait_for(healthy.wait(), 5)
        assert failures == ["flaky", "flaky", "flaky"]
        assert sup.restarts("flaky") == 3
        assert sup.running("flaky")
    assert runs == 4


async def test_failing_names_a_task_that_keeps_failing() -> None:
    failed = asyncio.Event()
    count = 0

    async def broken() -> None:
        nonlocal count
        count += 1
        if count >= 3:
            failed.set()
        raise ValueError("store gone")

    async with Supervisor("test", first_delay=0.001, max_delay=0.001, failing_after=3) as sup:
        sup.spawn("store-watch", broken)
        await asyncio.wait_for(failed.wait(), 5)
        assert sup.failing() == {"store-watch": "ValueError: store gone"}


async def test_failing_gives_the_error_inside_a_task_group() -> None:
    failed = asyncio.Event()

    async def grouped() -> None:
        failed.set()
        async with asyncio.TaskGroup() as group:
            group.create_task(_raise(ConnectionError("broker mq: refused")))

    async with Supervisor("test", first_delay=1, max_delay=1, failing_after=1) as sup:
        sup.spawn("copier", grouped)
        await asyncio.wait_for(failed.wait(), 5)
        async with asyncio.timeout(5):
            while not sup.failing():  # the group is failing once its task has raised
                await asyncio.sleep(0)
        assert sup.failing() == {"copier": "ConnectionError: broker mq: refused"}


async def _raise(exc: Exception) -> None:
    raise exc


async def test_a_task_that_returns_is_done_and_leaving_cancels_the_rest() -> None:
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    async def once() -> None:
        return None

    async with Supervisor("test") as sup:
        done = sup.spawn("once", once)
        sup.spawn("forever", forever)
        await done
        assert not sup.running("once")
    assert cancelled.is_set()


async def test_no_restart_logs_and_ends() -> None:
    failures: list[str] = []

    async def fails() -> None:
        raise KeyError("x")

    async with Supervisor("test", on_failure=failures.append) as sup:
        task = sup.spawn("one-shot", fails, restart=False)
        await task
        assert failures == ["one-shot"]
        assert not sup.running("one-shot")


async def test_spawn_outside_the_block_is_an_error() -> None:
    sup = Supervisor("test")

    async def nothing() -> None:
        return None

    with pytest.raises(RuntimeError):
        sup.spawn("x", nothing)


async def test_a_task_that_recovered_is_no_longer_failing() -> None:
    now = [0.0]
    healthy = asyncio.Event()
    count = 0

    async def recovers() -> None:
        nonlocal count
        count += 1
        if count <= 3:
            raise ValueError("store gone")
        healthy.set()
        await asyncio.Event().wait()

    async with Supervisor(
        "test", first_delay=0.001, max_delay=0.001, failing_after=3, clock=lambda: now[0]
    ) as sup:
        sup.spawn("store-watch", recovers)
        await asyncio.wait_for(healthy.wait(), 5)
        assert sup.failing() == {"store-watch": "ValueError: store gone"}  # not healthy yet
        now[0] += 30.0  # the run has lasted HEALTHY_AFTER
        assert sup.failing() == {}


async def test_a_task_that_says_it_is_healthy_is_no_longer_failing_at_once() -> None:
    began = asyncio.Event()
    count = 0

    async def session() -> None:
        nonlocal count
        count += 1
        if count == 1:
            raise ValueError("log unreachable")
        began.set()
        await asyncio.Event().wait()

    async with Supervisor("test", first_delay=0.001, max_delay=0.001, failing_after=1) as sup:
        sup.spawn("copier:mqtt a/b", session)
        await asyncio.wait_for(began.wait(), 5)
        assert sup.failing() == {"copier:mqtt a/b": "ValueError: log unreachable"}
        sup.healthy("copier:mqtt a/b")  # its session began
        assert sup.failing() == {}
        sup.healthy("unknown")  # a task that is gone: nothing to forget


async def _loses_its_first_cancellation(started: asyncio.Event) -> None:
    """As code under Python 3.11's ``asyncio.wait_for`` can: the cancellation arrives as the
    awaited answer does, and the answer wins."""
    started.set()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.Event().wait()


async def test_a_task_that_loses_its_cancellation_and_fails_is_not_restarted() -> None:
    runs = 0
    started = asyncio.Event()

    async def session() -> None:
        nonlocal runs
        runs += 1
        await _loses_its_first_cancellation(started)
        raise ConnectionError("broker mq: disconnected")  # as a session that was cut

    async with asyncio.timeout(5):
        async with Supervisor("test", first_delay=0.001) as sup:
            sup.spawn("copier", session)
            await started.wait()
    assert runs == 1


async def test_a_task_that_loses_its_cancellation_and_goes_on_is_cancelled_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    started, ended = asyncio.Event(), asyncio.Event()

    async def session() -> None:
        await _loses_its_first_cancellation(started)
        try:
            await asyncio.Event().wait()  # reading on, as if never told to stop
        finally:
            ended.set()

    async with asyncio.timeout(5):
        async with Supervisor("test", recancel_after=0.01) as sup:
            sup.spawn("one", session)
            await started.wait()
            task = sup.cancel("one")
            assert task is not None
            with pytest.raises(asyncio.CancelledError):
                await task
            assert ended.is_set()
            started.clear()
            sup.spawn("two", session)
            await started.wait()
    assert "cancelling it again" in caplog.text
