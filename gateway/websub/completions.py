"""Delivered webhooks leave the store's queue in batches: a worker marks a row done here
and one task writes many at once (a transaction costs far more than a row)."""

from __future__ import annotations

import asyncio
import logging

from bridge.errors import BridgeError
from bridge.store.webhooks import WebhookStore

log = logging.getLogger("streambridge.websub")
COMPLETE_BATCH_SECONDS = 0.02  # waited after the first completion before writing
RETRY_SECONDS = 1.0


class Completions:
    def __init__(self, store: WebhookStore) -> None:
        self._store = store
        self._done: set[int] = set()
        self._wake = asyncio.Event()

    def add(self, seq: int) -> None:
        self._done.add(seq)
        self._wake.set()

    def __contains__(self, seq: int) -> bool:
        """Delivered but not written yet: the worker must not deliver it again."""
        return seq in self._done

    def unwritten(self) -> frozenset[int]:
        """What is delivered but not written now. Taken before reading the queue: a row
        written (and so no longer here) while that read ran may still be in its answer."""
        return frozenset(self._done)

    async def run(self) -> None:
        """Write completions until cancelled; a store error is retried (other failures
        go to the supervisor)."""
        while True:
            await self._wake.wait()
            await asyncio.sleep(COMPLETE_BATCH_SECONDS)
            self._wake.clear()
            try:
                await self.flush()
            except BridgeError as exc:
                log.warning(
                    "webhook completion write failed; retrying",
                    extra={"error": str(exc), "retry_in": RETRY_SECONDS},
                )
                await asyncio.sleep(RETRY_SECONDS)
                self._wake.set()

    async def flush(self) -> None:
        done = list(self._done)
        if done:
            await self._store.complete(done)
            self._done.difference_update(done)
