"""The Connector Protocol every broker implements (STYLE §3)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from bridge.event import Event
from bridge.supervision import Supervisor

EARLIEST = "earliest"


@dataclass(frozen=True, slots=True)
class Gap:
    """Yielded by ``subscribe`` when ``from_cursor`` is older than what the broker retains."""

    requested: str
    oldest: str | None


class Connector(Protocol):
    name: str
    on_task_failure: Callable[[str], None] | None

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def subscribe(self, channel: str, from_cursor: str | None = None) -> AsyncIterator[Event | Gap]:
        """Events of ``channel`` after ``from_cursor`` (None: from the live end; EARLIEST:
        from the oldest retained), then live, until the iterator is closed."""
        ...

    async def publish(self, channel: str, event: Event) -> None:
        """Deliver to the backend; returns once the broker has confirmed it."""
        ...

    async def ready(self) -> bool:
        """Whether the broker is reachable now (for /readyz)."""
        ...


@runtime_checkable
class Replaying(Protocol):
    """A connector that can say where its live end is and replay a bounded range: what
    a client catching up on its own needs (gateway/catchup.py). Every connector here."""

    async def position(self, channel: str) -> str | None:
        """The cursor after which ``subscribe`` yields exactly what comes from now on;
        None or EARLIEST when the channel holds nothing yet."""
        ...

    def read_range(
        self,
        channel: str,
        from_cursor: str,
        until_cursor: str | None,
        *,
        max_events: int | None = None,
        max_age: float | None = None,
    ) -> AsyncIterator[Event | Gap]:
        """Events after ``from_cursor`` (or EARLIEST) up to and including
        ``until_cursor`` (None or EARLIEST: nothing is before it), then the end; a Gap
        first when not retained. ``max_events``/``max_age`` narrow what counts as
        retained, for brokers that keep a replay log for the gateway."""
        ...


@runtime_checkable
class Releasing(Protocol):
    """A connector that holds something per channel (a broker subscription, a replay log
    in memory) beyond its subscribers: what the gateway drops when a channel's hub closes
    for good (CONTRACT §4c: resources follow subscribers)."""

    async def release(self, channel: str) -> None:
        """Let go of what ``channel`` holds; a later ``subscribe`` takes it up again."""
        ...


@runtime_checkable
class Copying(Protocol):
    """A connector that copies channels into a log others read (the cluster log, CONTRACT
    §11): it can keep copying a channel no subscriber of this node reads, for the window
    workers reading the log."""

    def keep_copying(self, channels: Collection[str]) -> None:
        """Copy ``channels`` (compete for it) from now on, with or without subscribers;
        a channel left out is copied on only while a subscriber reads it."""
        ...

    def failing(self) -> dict[str, str]:
        """Copier tasks whose last session failed and none began since (the log cannot
        be appended to, the source is away), with their last error."""
        ...


@runtime_checkable
class Snapshotting(Protocol):
    """A connector that can start a stream with a table's current rows (CDC §7b)."""

    async def snapshot(self, channel: str) -> tuple[str, AsyncIterator[Event]]:
        """A boundary cursor and the rows (cursor None), consistent with it."""
        ...

    def is_after(self, cursor: str, boundary: str) -> bool:
        """Whether the change at ``cursor`` is not reflected in a snapshot at ``boundary``."""
        ...


class AsyncResource:
    """An async context manager holding what ``_open`` enters on its stack (clients,
    connections, a supervisor and its tasks) until the context exits, in reverse order.
    If ``_open`` fails, what it had entered is released at once."""

    _stack: AsyncExitStack | None = None
    # Told of each failure of a task this resource supervises (the gateway counts them in
    # streambridge_task_restarts_total); set by connectors.registry.connector_for.
    on_task_failure: Callable[[str], None] | None = None

    async def _open(self, stack: AsyncExitStack) -> None:
        raise NotImplementedError

    async def _supervisor(self, stack: AsyncExitStack, owner: str) -> Supervisor:
        """A supervisor for this resource's background tasks, ended with the resource."""
        return await stack.enter_async_context(Supervisor(owner, on_failure=self.on_task_failure))

    async def __aenter__(self) -> Self:
        async with AsyncExitStack() as stack:
            await self._open(stack)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()
