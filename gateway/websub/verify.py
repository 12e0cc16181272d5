"""Verification of intent and denial (W3C WebSub §5.2, §5.3), after the hub said 202.

Policy is checked again when the request is taken up: an application past its tier's
``max_connections`` (here: WebSub subscriptions per API), or an API blocked or retired
meanwhile, gets ``hub.mode=denied`` with a ``hub.reason``. Otherwise the hub sends a
random single-use ``hub.challenge``; only a 2xx answer whose body is exactly that
challenge makes the (un)subscription happen. A callback the SSRF guard refuses gets no
request at all, not even the denial.

Each verification and each denial is a task of its own under the WebSub supervisor
(not restarted: the subscriber asks again). CONTRACT §4c bounds them: an application
has at most ``max_pending`` verifications in flight (429 above), and a subscription
being verified holds a slot of its tier in the store from before the request until it
is stored or fails, so concurrent requests cannot pass the tier's limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from bridge.catalog import TopicMatch
from bridge.config import WebSubSettings
from bridge.errors import BridgeError, CallbackError, CallbackRefused, TooManyConnections
from bridge.store.records import WebSubRecord
from bridge.store.webhooks import WebhookStore
from bridge.supervision import Supervisor
from bridge.wire.websub import (
    HubRequest,
    clamp_lease,
    denial_url,
    loggable,
    new_challenge,
    request_target,
    verification_url,
)
from gateway.hub import HUB_START_SECONDS
from gateway.websub.client import CallbackClient
from gateway.websub.feed import Topics, feed_hub, topic_urls
from gateway.websub.guard import CallbackGuard, Target

log = logging.getLogger("streambridge.websub")


@dataclass(frozen=True, slots=True)
class Pending:
    """An accepted (202) hub request, waiting for verification."""

    request: HubRequest
    match: TopicMatch
    client_id: str


class Verifier:
    def __init__(
        self,
        *,
        supervisor: Supervisor,
        client: CallbackClient,
        guard: CallbackGuard,
        settings: WebSubSettings,
        store: WebhookStore,
        topics: Topics,
        public_url: str,
        subscribed: Callable[[WebSubRecord], None],
        unsubscribed: Callable[[str], None],
        max_pending: int = 10,
    ) -> None:
        """``subscribed``/``unsubscribed``: a verified (un)subscription is stored; start
        or stop delivering it."""
        self._supervisor = supervisor
        self._client = client
        self._guard = guard
        self._settings = settings
        self._store = store
        self._topics = topics
        self._public_url = public_url
        self._subscribed = subscribed
        self._unsubscribed = unsubscribed
        self._numbers = itertools.count(1)
        self._max_pending = max_pending
        self._in_flight: Counter[str] = Counter()  # verifications per application

    def take(self, pending: Pending) -> None:
        """Verify in a task of its own; every failure is logged, none escapes. Raises
        TooManyConnections when the application has ``max_pending`` in flight already."""
        client_id = pending.client_id
        if self._in_flight[client_id] >= self._max_pending:
            raise TooManyConnections(
                f"at most {self._max_pending} verifications may be pending per application",
                retry_after=max(1, int(self._settings.timeout)),
            )
        self._in_flight[client_id] += 1

        async def verify() -> None:
            try:
                await self.verify(pending)
            finally:
                self._in_flight[client_id] -= 1
                if not self._in_flight[client_id]:
                    del self._in_flight[client_id]

        self._supervisor.spawn(f"websub-verify:{next(self._numbers)}", verify, restart=False)

    def tell_denied(self, callback: str, match: TopicMatch, reason: str) -> None:
        """Send the denial (WebSub §5.2) in a task of its own."""
        _, topic_url = topic_urls(self._public_url, match)
        self._supervisor.spawn(
            f"websub-deny:{next(self._numbers)}",
            lambda: self.deny(callback, topic_url, reason),
            restart=False,
        )

    async def refusal(self, pending: Pending) -> tuple[str | None, bool]:
        """Why policy refuses this subscription now (or None), and whether a tier slot
        was claimed for it (to release once it is stored or fails). Slots are counted in
        the store, so the tier's limit holds whichever gateway took the request."""
        if pending.request.mode != "subscribe":
            return None, False
        catalog = self._topics.catalog
        api = catalog.api(pending.match.api.name, pending.match.api.version)
        if api is None or api.state not in ("PUBLISHED", "DEPRECATED"):
            return "the API no longer takes subscriptions", False
        access = catalog.subscriptions.get((pending.client_id, api.name, api.version))
        if access is None or access.blocked:
            return "the application's subscription to this API is gone or blocked", False
        limit = catalog.tier(access.tier).max_connections
        if limit is None:
            return None, False
        claimed = await self._store.claim_slot(
            client_id=pending.client_id,
            api=api.name,
            version=api.version,
            topic=pending.match.name,
            callback=pending.request.callback,
            limit=limit,
            hold=3 * self._settings.timeout + 30,  # a dead gateway's slot frees itself
        )
        if not claimed:
            return f"the tier {access.tier} allows {limit} subscriptions", False
        return None, True

    async def _release(self, pending: Pending) -> None:
        match = pending.match
        with contextlib.suppress(BridgeError):  # it expires by itself otherwise
            await self._store.release_slot(
                api=match.api.name,
                version=match.api.version,
                topic=match.name,
                callback=pending.request.callback,
            )

    async def verify(self, pending: Pending) -> None:
        request, match = pending.request, pending.match
        _, topic_url = topic_urls(self._public_url, match)
        try:
            target = await self._guard.target(request.callback)
        except CallbackRefused as exc:
            log.warning(
                "websub request refused",
                extra={
                    "mode": request.mode,
                    "callback": loggable(request.callback),
                    "error": exc.detail,
                },
            )
            return
        try:
            reason, claimed = await self.refusal(pending)
        except BridgeError as exc:
            log.warning(
                "websub request not checked",
                extra={"callback": loggable(request.callback), "error": str(exc)},
            )
            return
        if reason is not None:
            await self.deny(request.callback, topic_url, reason)
            return
        try:
            await self._verify(pending, topic_url, target)
        finally:
            if claimed:
                await self._release(pending)

    async def _verify(self, pending: Pending, topic_url: str, target: Target) -> None:
        """The verification request (§5.3), then the (un)subscription stored."""
        request = pending.request
        settings = self._settings
        lease = clamp_lease(
            request.lease_seconds,
            settings.default_lease_seconds,
            settings.min_lease_seconds,
            settings.max_lease_seconds,
        )
        challenge = new_challenge()
        url = verification_url(
            request.callback,
            request.mode,
            topic_url,
            challenge,
            lease if request.mode == "subscribe" else None,
        )
        try:
            answer = await self._client.request(
                "GET",
                target.origin,
                request_target(url),
                [("Accept", "*/*")],
                timeout=settings.timeout,
            )
        except (CallbackError, TimeoutError) as exc:
            reason = str(exc) or f"no answer within {settings.timeout:g}s"
            log.warning(
                "websub verification failed",
                extra={
                    "callback": loggable(request.callback),
                    "reason": reason,
                    "mode": request.mode,
                },
            )
            return
        if not 200 <= answer.status < 300 or answer.body != challenge.encode():
            log.info(
                "websub request not verified",
                extra={
                    "mode": request.mode,
                    "callback": loggable(request.callback),
                    "status": answer.status,
                    "challenge": "echoed" if answer.body == challenge.encode() else "not echoed",
                },
            )
            return
        try:
            await self._apply(pending, lease)
        except BridgeError as exc:
            log.warning(
                "websub request not stored",
                extra={
                    "mode": request.mode,
                    "callback": loggable(request.callback),
                    "error": str(exc),
                },
            )

    async def deny(self, callback: str, topic_url: str, reason: str) -> None:
        """WebSub §5.2: tell the subscriber its subscription is refused or has ended."""
        url = denial_url(callback, topic_url, reason)
        try:
            target = await self._guard.target(callback)
            await self._client.request(
                "GET", target.origin, request_target(url), [], timeout=self._settings.timeout
            )
        except (CallbackRefused, CallbackError, TimeoutError) as exc:
            log.info(
                "websub denial not delivered",
                extra={"callback": loggable(callback), "error": str(exc) or "timeout"},
            )

    async def _apply(self, pending: Pending, lease: int) -> None:
        request, match = pending.request, pending.match
        api = match.api
        if request.mode == "unsubscribe":
            found = await self._store.find_subscription(
                api.name, api.version, match.name, request.callback
            )
            if found is not None:
                self._unsubscribed(found.id)
                await self._store.delete_subscription(found.id)
            return
        # The topic's hub knows where the channel stands before the subscription is stored
        # (and listed): an event published once the subscriber sees it listed comes after
        # that position, so its feed, attached next, gets it. A hub started later began
        # past such an event.
        hub = feed_hub(self._topics, match)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(HUB_START_SECONDS):
                await hub.started.wait()
        now = time.time()
        record = WebSubRecord(
            id=uuid.uuid4().hex,
            api=api.name,
            version=api.version,
            topic=match.name,
            callback=request.callback,
            client_id=pending.client_id,
            secret=request.secret,
            signature=request.signature,
            lease_seconds=lease,
            expires_at=now + lease,
            created_at=now,
        )
        self._subscribed(await self._store.upsert_subscription(record))
