"""The slow-client cut of a writer blocked on a full socket (CONTRACT §5)."""

from __future__ import annotations

import asyncio

from bridge.errors import SlowConsumer
from gateway.stream import StreamSession


class CutOnOverflow:
    """Abandons a write blocked on a client that stopped reading once its queue overflows.

    Without this a client that never reads keeps the writer waiting on the socket forever
    (the server's flow control), its queue overflows unnoticed and it is never disconnected
    (CONTRACT §5). A transport sets ``writing`` around each send and, on CancelledError,
    asks ``confirm()`` whether the cancellation was this cut (then the stream just ends).
    """

    __slots__ = ("abandoned", "session", "task", "writing")

    def __init__(self, session: StreamSession) -> None:
        self.session = session
        self.task = asyncio.current_task()
        self.writing = False
        self.abandoned = False
        session.subscriber.on_overflow = self._overflowed

    def _overflowed(self) -> None:
        if self.writing and self.task is not None and not self.abandoned:
            self.abandoned = True
            self.task.cancel()

    def confirm(self) -> bool:
        """True when a CancelledError is ours (and absorbed), False when it is a real one."""
        ours = self.abandoned and self.task is not None and self.task.uncancel() == 0
        if ours:
            self.session.end_with(SlowConsumer("the client stopped reading"))
        return ours
