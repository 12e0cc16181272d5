"""The WebSub hub of a running gateway (CONTRACT §7): its parts, their tasks and their
order at start and stop.

- :class:`~gateway.websub.verify.Verifier` — verification of intent and denials;
- :class:`~gateway.websub.feeds.Feeds` — verified subscriptions as hub subscribers;
- :class:`~gateway.websub.intake.Intake` — their events into the store's queue;
- :class:`~gateway.websub.worker.Workers` — one delivery worker per feed;
- :class:`~gateway.websub.completions.Completions` — delivered rows out of the queue;
- :class:`~gateway.websub.upkeep.Upkeep` — the delivery lease and the feeds' upkeep.

Every task runs under the service's :class:`~bridge.supervision.Supervisor`: a failure is
logged with the task's name, counted (``on_task_failure``) and the task restarted with
backoff; leaving the service cancels them all. The service uses of the gateway only what
:class:`~gateway.websub.feed.Topics` names.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Self

from bridge.catalog import TopicMatch
from bridge.config import WebSubSettings
from bridge.errors import BridgeError
from bridge.store.records import WebSubRecord
from bridge.store.webhooks import WebhookStore
from bridge.supervision import Supervisor
from gateway.hub import Wake
from gateway.metrics import Metrics
from gateway.websub.client import CallbackClient
from gateway.websub.completions import Completions
from gateway.websub.delivery import Deliverer
from gateway.websub.feed import Topics, topic_urls
from gateway.websub.feeds import Feeds
from gateway.websub.guard import CallbackGuard
from gateway.websub.intake import Intake
from gateway.websub.upkeep import Upkeep
from gateway.websub.verify import Pending, Verifier
from gateway.websub.worker import Workers

RELEASE_SECONDS = 2.0  # at shutdown, for the webhook delivery lease's release


class WebSubService:
    def __init__(
        self,
        *,
        store: WebhookStore,
        settings: WebSubSettings,
        public_url: str,
        topics: Topics,
        metrics: Metrics,
        on_task_failure: Callable[[str], None] | None = None,
        client: CallbackClient | None = None,
        max_pending: int = 10,
    ) -> None:
        self.store = store
        self.public_url = public_url
        self.supervisor = Supervisor("websub", on_failure=on_task_failure)
        self.client = client or CallbackClient()
        self.guard = CallbackGuard(allow_private=settings.allow_private_callbacks)
        self.completions = Completions(store)
        self.workers = Workers(
            supervisor=self.supervisor,
            store=store,
            deliverer=Deliverer(self.client, self.guard, timeout=settings.timeout),
            retry=settings.retry,
            topics=topics,
            metrics=metrics,
            completions=self.completions,
        )
        self.intake = Intake(store, Wake())
        self.feeds = Feeds(
            supervisor=self.supervisor,
            store=store,
            topics=topics,
            public_url=public_url,
            metrics=metrics,
            workers=self.workers,
            intake=self.intake.wake,
        )
        self.verifier = Verifier(
            supervisor=self.supervisor,
            client=self.client,
            guard=self.guard,
            settings=settings,
            store=store,
            topics=topics,
            public_url=public_url,
            subscribed=self._verified,
            unsubscribed=self.feeds.ended,
            max_pending=max_pending,
        )
        self.upkeep = Upkeep(
            store=store, lease=settings.leader_lease, feeds=self.feeds, verifier=self.verifier
        )
        self._resources = AsyncExitStack()

    # --- life cycle -------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        async with AsyncExitStack() as stack:  # unwound in reverse at __aexit__
            stack.push_async_callback(self.client.aclose)
            stack.push_async_callback(self._release)
            stack.push_async_callback(self._write_rest)
            await stack.enter_async_context(self.supervisor)
            await self.upkeep.lead()
            self.supervisor.spawn("websub-intake", lambda: self.intake.run(self.feeds))
            self.supervisor.spawn("websub-completer", self.completions.run)
            self.supervisor.spawn("websub-upkeep", self.upkeep.run)
            self._resources = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._resources.__aexit__(exc_type, exc, tb)

    async def _write_rest(self) -> None:
        """Once every task has ended: what the intake and the completer had not written."""
        with contextlib.suppress(BridgeError):
            await self.intake.write(self.feeds)
            await self.completions.flush()
        self.feeds.detach_all()

    async def _release(self) -> None:
        """The next gateway need not wait for the lease to run out. Best effort: a store
        that does not answer within RELEASE_SECONDS (an SQLite write lock still held by a
        write cut short) must not hold the shutdown; the lease then runs out by itself."""
        with contextlib.suppress(BridgeError, TimeoutError):
            async with asyncio.timeout(RELEASE_SECONDS):
                await self.upkeep.release()

    def failing(self) -> dict[str, str]:
        """Tasks that keep failing (for /readyz)."""
        return self.supervisor.failing()

    # --- what the hub endpoints and the management API use ----------------------------
    def urls(self, match: TopicMatch) -> tuple[str, str]:
        """(hub URL, topic URL) as subscribers see them (gateway.public_url)."""
        return topic_urls(self.public_url, match)

    def verify(self, pending: Pending) -> None:
        """An accepted (202) hub request: verify it in a task of its own. Raises
        TooManyConnections past the application's pending verifications (CONTRACT §4c)."""
        self.verifier.take(pending)

    def deactivate(self, id: str) -> None:
        self.feeds.deactivate(id)

    def requeued(self, subscription_id: str) -> None:
        """A dead letter went back into the queue: its worker starts over from the oldest."""
        self.feeds.requeued(subscription_id)

    def _verified(self, record: WebSubRecord) -> None:
        """Start delivering a verified record; on a gateway that is not the leader it
        waits in the store for the leader."""
        if self.upkeep.leading:
            self.feeds.activate(record)
