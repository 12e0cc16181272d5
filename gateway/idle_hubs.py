"""Which idle hubs close, and when (CONTRACT §4c): a hub with no subscriber keeps its
replay for ``replay.max_age``; past ``limits.max_idle_hubs`` idle ones the least recently
used close early; a hub on a broker that keeps its own history (Kafka) closes as soon as
its last subscriber leaves, since a resume reads the broker again, exactly, and its
consumer's sockets go now."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time

from gateway.hub import Hub, HubSet

KEPT_HISTORY_IDLE_SECONDS = 10.0  # a Kafka hub fetched but never attached to, at most
HubKey = tuple[str, str, str]


def keeps_history(source: object) -> bool:
    """Whether subscribers can read the broker's own history (Kafka), not only the hub's."""
    return bool(getattr(source, "keeps_history", False))


class IdleHubs:
    def __init__(self, hubs: HubSet, eager: set[HubKey], max_idle: int) -> None:
        self.hubs = hubs
        self.eager = eager  # hubs that read from the start and stay open
        self.max_idle = max_idle
        self._released: set[HubKey] = set()
        self._release_now = asyncio.Event()

    def attached(self, key: HubKey, hub: Hub) -> None:
        """A client is about to attach to ``hub``: it is no longer released."""
        self._released.discard(key)
        if keeps_history(hub.connector):
            hub.on_idle = functools.partial(self._release, key)

    def _release(self, key: HubKey) -> None:
        self._released.add(key)
        self._release_now.set()

    async def released_within(self, seconds: float) -> None:
        """Wait until a hub is released or ``seconds`` pass."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, seconds)):
                await self._release_now.wait()
        self._release_now.clear()

    async def close(self) -> None:
        """Close the hubs whose time is up, together: one slow to stop holds up none."""
        idle = [(key, hub) for key, hub in self.hubs.idle() if key not in self.eager]
        surplus = len(idle) - self.max_idle
        now = time.monotonic()
        closing: list[tuple[HubKey, bool]] = []
        for index, (key, hub) in enumerate(idle):
            keep = hub.replay.max_age
            if keeps_history(hub.connector):
                keep = min(keep, KEPT_HISTORY_IDLE_SECONDS)
            if index < surplus or now - hub.idle_since > keep:
                closing.append((key, False))
            elif key in self._released:
                closing.append((key, True))

        async def close(key: HubKey, released: bool) -> None:
            hub = self.hubs.hubs.get(key)
            # A client may have fetched it since (no longer released) or joined.
            if hub is None or hub.subscribers or (released and key not in self._released):
                return
            self._released.discard(key)
            await self.hubs.reap_one(key)

        await asyncio.gather(*(close(*c) for c in closing))
