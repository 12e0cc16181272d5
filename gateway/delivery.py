"""Per-connection delivery (CONTRACT §10): the client's filter, then its tier's policy,
between the hubs and the client's queue.

The hub still encodes each event once: a gate only decides which of the shared entries
reach this client's queue, and when. ``conflate`` keeps, for the keys that are pending
only, the latest entry of each key and flushes them every ``every`` in arrival order
(so ids stay increasing), as many as the queue has room for: a conflated client is never
cut. ``sample`` lets ``max`` entries through each ``per`` window and skips the rest (also
when the queue is full): never cut either.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Hashable, Iterable

from bridge.client_filter import admits
from bridge.config import ConflateDelivery, Delivery, SampleDelivery
from bridge.cost import affordable_values
from bridge.errors import PipelineError
from bridge.expressions import Expression, compile_expression
from gateway.queueing import Item, Subscriber


class Policy:
    """``delivery: all``: straight to the queue."""

    def __init__(self, subscriber: Subscriber) -> None:
        self.subscriber = subscriber

    def offer(self, item: Item) -> None:
        self.subscriber.enqueue(item)

    def backlog(self, items: list[Item]) -> list[Item]:
        return items

    def close(self) -> None:
        pass


def _hashable(value: object) -> Hashable:
    return value if isinstance(value, str | int | float | bool | None) else repr(value)


class Conflate(Policy):
    def __init__(
        self,
        subscriber: Subscriber,
        key: Expression,
        every: float,
        conflated: Callable[[int], None],
    ) -> None:
        super().__init__(subscriber)
        self.key = key
        self.every = every
        self.conflated = conflated  # counts events replaced by a later one of their key
        self.pending: dict[Hashable, tuple[int, Item]] = {}
        self._arrivals = itertools.count()
        self._timer: asyncio.TimerHandle | None = None

    def _key_of(self, item: Item) -> Hashable:
        if not isinstance(item, tuple):
            return None
        try:
            return _hashable(self.key.evaluate(item[0].context()))
        except PipelineError:
            return None  # events without a key share one

    def offer(self, item: Item) -> None:
        if not isinstance(item, tuple):
            self.subscriber.enqueue(item)
            return
        key = self._key_of(item)
        if key in self.pending:
            self.conflated(1)
        self.pending[key] = (next(self._arrivals), item)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.every, self.flush)

    def flush(self) -> None:
        self._timer = None
        subscriber = self.subscriber
        for key, (_, item) in sorted(self.pending.items(), key=lambda pair: pair[1][0]):
            if not subscriber.room():
                break  # the rest stays pending, and may be replaced meanwhile
            del self.pending[key]
            subscriber.enqueue(item)
        if self.pending:
            self._timer = asyncio.get_running_loop().call_later(self.every, self.flush)

    def backlog(self, items: list[Item]) -> list[Item]:
        """The latest entry per key, in their order (a resumed conflated stream)."""
        latest: dict[Hashable, int] = {}
        for index, item in enumerate(items):
            if isinstance(item, tuple):
                latest[self._key_of(item)] = index
        kept = set(latest.values())
        self.conflated(sum(isinstance(item, tuple) for item in items) - len(kept))
        return [item for i, item in enumerate(items) if i in kept or not isinstance(item, tuple)]

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class Sample(Policy):
    def __init__(
        self, subscriber: Subscriber, most: int, per: float, sampled_out: Callable[[int], None]
    ) -> None:
        super().__init__(subscriber)
        self.most = most
        self.per = per
        self.sampled_out = sampled_out
        self._window_start = float("-inf")
        self._taken = 0

    def _admit(self) -> bool:
        now = asyncio.get_running_loop().time()
        if now - self._window_start >= self.per:
            self._window_start, self._taken = now, 0
        if self._taken < self.most and self.subscriber.room():
            self._taken += 1
            return True
        self.sampled_out(1)
        return False

    def offer(self, item: Item) -> None:
        if not isinstance(item, tuple) or self._admit():
            self.subscriber.enqueue(item)

    def backlog(self, items: list[Item]) -> list[Item]:
        return [item for item in items if not isinstance(item, tuple) or self._admit()]


class ConnectionGate:
    """A client's filter, then its tier's policy (``Subscriber.gate``).

    A filter with a comprehension is evaluated only on events holding few enough values
    for it to finish within ``budget`` seconds (``gateway.limits.step_budget``, as for
    pipeline steps, bridge.cost): the CEL runtime cannot be stopped half-way, so the
    cost is bounded before it starts; a larger event is skipped for this client only.
    """

    def __init__(
        self, client_filter: Expression | None, policy: Policy, budget: float | None = None
    ) -> None:
        self.client_filter = client_filter
        self.policy = policy
        self._cap = self._most = 0
        if client_filter is not None and client_filter.comprehensions and budget is not None:
            self._cap = affordable_values(budget, client_filter.comprehensions)
            # Literal lists in the filter are iterated too: at most one item per comma.
            self._most = self._cap - client_filter.source.count(",")

    def _passes(self, item: Item) -> bool:
        client_filter = self.client_filter
        if client_filter is None or not isinstance(item, tuple):
            return True
        entry = item[0]
        if self._cap and entry.values(self._cap) > self._most:
            return False  # too costly to evaluate on this event
        return admits(client_filter, entry.context())

    def offer(self, item: Item) -> None:
        if self._passes(item):
            self.policy.offer(item)

    def backlog(self, items: Iterable[Item]) -> list[Item]:
        return self.policy.backlog([item for item in items if self._passes(item)])


def policy_for(
    subscriber: Subscriber,
    delivery: Delivery,
    *,
    conflated: Callable[[int], None],
    sampled_out: Callable[[int], None],
) -> Policy:
    if isinstance(delivery, ConflateDelivery):
        spec = delivery.conflate
        return Conflate(subscriber, compile_expression(spec.key), spec.every, conflated)
    if isinstance(delivery, SampleDelivery):
        sample = delivery.sample
        return Sample(subscriber, sample.max, sample.per, sampled_out)
    return Policy(subscriber)
