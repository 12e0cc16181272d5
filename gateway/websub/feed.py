"""A verified WebSub subscription this gateway delivers (CONTRACT §7), and what the WebSub
hub uses of the running gateway (:class:`Topics`).

A :class:`Feed` is a hub :class:`~gateway.hub.Subscriber` on its topic — it consumes
events exactly like an SSE client — plus the position of the last event the intake took
and the wake of its delivery worker.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol

from bridge.catalog import Catalog, TopicMatch
from bridge.store.records import WebSubRecord
from gateway.hub import Hub, Subscriber


class Topics(Protocol):
    """The current catalogue and the hub of a topic (the gateway's runtime)."""

    @property
    def catalog(self) -> Catalog: ...

    def hub(self, match: TopicMatch, *, masked: bool = False) -> Hub: ...


def feed_hub(topics: Topics, match: TopicMatch) -> Hub:
    """The hub a topic's webhooks read. A subscription does not keep its token's scopes:
    webhooks of a topic with a column mask are always masked (CONTRACT §7b)."""
    return topics.hub(match, masked=match.topic.mask is not None)


def topic_urls(public_url: str, match: TopicMatch) -> tuple[str, str]:
    """(hub URL, topic URL) as subscribers see them (``gateway.public_url``)."""
    base = public_url + match.api.base_path
    return base + "/hub", base + match.name


@dataclass(eq=False)
class Feed:
    record: WebSubRecord
    match: TopicMatch
    link: str  # the Link header of every delivery (WebSub §7)
    host: str  # host:port of the callback, the circuit breaker's key
    subscriber: Subscriber
    hub: Hub
    last_id: str | None = None  # the id of the last event the intake wrote to the store
    reset: bool = False  # a dead letter was requeued: the worker starts over
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def id(self) -> str:
        return self.record.id

    def requeued(self) -> None:
        """A dead letter went back into the queue: the worker starts over from the oldest."""
        self.reset = True
        self.wake.set()
