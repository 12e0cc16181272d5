"""One supervisor for every long-lived background task (STYLE §7).

A task runs under a :class:`Supervisor`, itself an async context manager around an
``asyncio.TaskGroup``. A task that raises is logged with its name, counted through
``on_failure`` (``streambridge_task_restarts_total{task}`` at the gateway) and started
again after an exponential backoff, in the manner of Erlang's ``one_for_one`` restart
strategy. A task that returns is done. Cancellation is never caught: leaving the
``async with`` block cancels and awaits every task, so nothing outlives its owner and no
failure is swallowed by ``gather(return_exceptions=True)``.

Cancellation is level-triggered, as in Trio and AnyIO: a task told to stop is never
restarted, and one still running ``recancel_after`` seconds later is warned about and
cancelled again, until it ends. Code that loses a cancellation (Python 3.11's
``asyncio.wait_for`` does when the awaited result arrives in the same loop turn) then
cannot keep its owner from stopping.

``failing()`` names the tasks that failed ``failing_after`` times in a row without a
healthy run between, so ``/readyz`` can say which part of the gateway keeps failing; a
task whose current run has lasted ``HEALTHY_AFTER``, or that said so (``healthy``), is
healthy again.

Only asyncio is used here, so connectors and the gateway share this one implementation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType

log = logging.getLogger("streambridge.supervisor")

FIRST_DELAY = 0.1
MAX_DELAY = 30.0
FAILING_AFTER = 3
HEALTHY_AFTER = 30.0  # seconds a run must last before its failure streak is forgotten
RECANCEL_AFTER = 5.0  # seconds a cancelled task has to end before it is cancelled again


@dataclass(slots=True)
class _Child:
    name: str
    run: Callable[[], Awaitable[None]]
    restart: bool
    task: asyncio.Task[None] | None = None
    streak: int = 0  # failures in a row
    restarts: int = 0
    last_error: str = ""
    started: float | None = None  # when the current run began; None between runs
    stopping: bool = False  # cancelled by the supervisor: never restarted


class Supervisor:
    """Starts, restarts and finally cancels named tasks.

    >>> async with Supervisor("runtime") as supervisor:
    ...     supervisor.spawn("store-watch", watch_store)
    """

    def __init__(
        self,
        owner: str,
        *,
        on_failure: Callable[[str], None] | None = None,
        first_delay: float = FIRST_DELAY,
        max_delay: float = MAX_DELAY,
        failing_after: int = FAILING_AFTER,
        clock: Callable[[], float] = time.monotonic,
        recancel_after: float = RECANCEL_AFTER,
    ) -> None:
        self.owner = owner
        self._recancel_after = recancel_after
        self._on_failure = on_failure
        self._first_delay = first_delay
        self._max_delay = max_delay
        self._failing_after = failing_after
        self._clock = clock
        self._group: asyncio.TaskGroup | None = None
        self._children: dict[str, _Child] = {}

    async def __aenter__(self) -> Supervisor:
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        group, self._group = self._group, None
        assert group is not None
        for child in self._children.values():
            self._stop(child)
        # The children never raise (failures are handled in _keep), so the group only
        # waits for their cancellation here.
        await group.__aexit__(exc_type, exc, tb)

    def spawn(
        self, name: str, run: Callable[[], Awaitable[None]], *, restart: bool = True
    ) -> asyncio.Task[None]:
        """Run ``run()`` as task ``name``; restarted on failure unless ``restart`` is off
        (then a failure is logged and counted, and the task ends)."""
        if self._group is None:
            raise RuntimeError(f"supervisor {self.owner} is not running")
        known = self._children.get(name)
        if known is not None and known.task is not None and not known.task.done():
            raise ValueError(f"task {name!r} is already running under {self.owner}")
        child = _Child(name, run, restart)
        self._children[name] = child
        child.task = self._group.create_task(self._keep(child), name=name)
        return child.task

    def cancel(self, name: str) -> asyncio.Task[None] | None:
        """Stop task ``name``; await the returned task to know it has ended."""
        child = self._children.pop(name, None)
        if child is None or child.task is None:
            return None
        self._stop(child)
        return child.task

    def _stop(self, child: _Child) -> None:
        """Cancel ``child``, and again every ``recancel_after`` seconds until it ends."""
        task = child.task
        if task is None or task.done():
            return
        child.stopping = True
        loop = task.get_loop()

        def again() -> None:
            if task.done():
                return
            log.warning(
                "task still running after its cancellation; cancelling it again",
                extra={"task": task.get_name(), "owner": self.owner},
            )
            task.cancel()
            loop.call_later(self._recancel_after, again)

        task.cancel()
        loop.call_later(self._recancel_after, again)

    def running(self, name: str) -> bool:
        child = self._children.get(name)
        return child is not None and child.task is not None and not child.task.done()

    def failing(self) -> dict[str, str]:
        """Tasks that failed ``failing_after`` times in a row, with their last error."""
        now = self._clock()
        return {
            c.name: c.last_error
            for c in self._children.values()
            if c.streak >= self._failing_after
            and (c.started is None or now - c.started < HEALTHY_AFTER)
        }

    def healthy(self, name: str) -> None:
        """Task ``name`` says it works again (a session it began is up): its failure
        streak is forgotten now, not ``HEALTHY_AFTER`` into its run."""
        child = self._children.get(name)
        if child is not None:
            child.streak = 0

    def restarts(self, name: str) -> int:
        child = self._children.get(name)
        return 0 if child is None else child.restarts

    async def _keep(self, child: _Child) -> None:
        delay = self._first_delay
        try:
            while True:
                started = child.started = self._clock()
                try:
                    await child.run()
                    child.streak = 0
                    return
                except Exception as exc:  # the supervisor's job: log, count, restart
                    if child.stopping:  # told to stop: what it raised on the way is moot
                        raise asyncio.CancelledError from exc
                    child.started = None
                    if self._clock() - started >= HEALTHY_AFTER:
                        child.streak, delay = 0, self._first_delay
                    child.streak += 1
                    child.last_error = describe(exc)
                    log.error(
                        "task failed",
                        exc_info=exc,
                        extra={
                            "task": child.name,
                            "owner": self.owner,
                            "failures_in_a_row": child.streak,
                            "restart_in": round(delay, 3) if child.restart else None,
                        },
                    )
                    if self._on_failure is not None:
                        self._on_failure(child.name)
                    if not child.restart:
                        return
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self._max_delay)
                    child.restarts += 1
        finally:
            if self._children.get(child.name) is child:
                del self._children[child.name]


def describe(exc: BaseException) -> str:
    """``Type: message`` of what failed; for a task group's failure, of the first error
    inside it (what /readyz shows, not "unhandled errors in a TaskGroup")."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"
