"""The state store: APIs, applications, subscriptions, tiers and signing keys, kept in
SQLite (the default) or PostgreSQL (issue 3) through SQLAlchemy's asyncio engine.

:class:`Store` is the one object the gateway holds. Each aggregate lives in its own
module (:mod:`~bridge.store.apis`, :mod:`~bridge.store.applications`,
:mod:`~bridge.store.subscriptions`, :mod:`~bridge.store.tiers`, and the WebSub part,
:mod:`~bridge.store.webhooks`); all share one :class:`~bridge.store.engine.Database`,
which opens the engine, migrates the schema with Alembic and maps database errors.

Every catalogue mutation bumps the revision (:mod:`bridge.store.queries`), so gateways
sharing a database notice each other's changes by polling :meth:`Store.revision` and
reading a :meth:`Store.snapshot`. A snapshot is read in one transaction (REPEATABLE READ
on PostgreSQL), so it never mixes two revisions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Final, TypeVar

from sqlalchemy import func, select
from sqlalchemy.engine import URL

from bridge.config import Api, Config
from bridge.errors import StoreError
from bridge.expressions import DEFAULT_LIMITS, CelLimits
from bridge.store import seeding
from bridge.store.apis import ApiStore, api_from
from bridge.store.applications import ApplicationStore
from bridge.store.copiers import CopierLeases
from bridge.store.developers import DeveloperStore
from bridge.store.engine import Database, engine_url
from bridge.store.nodes import NodeStore
from bridge.store.queries import bump, from_row, revision
from bridge.store.records import ApplicationRecord, Snapshot, SubscriptionRecord
from bridge.store.schema import apis, applications, subscriptions, tiers
from bridge.store.subscriptions import SubscriptionStore
from bridge.store.tiers import TierStore, tier_from
from bridge.store.webhooks import WebhookStore

log = logging.getLogger("streambridge.store")
_T = TypeVar("_T")
PING_TIMEOUT: Final = 2.0
# pg_advisory_xact_lock key: gateways starting together on one database seed in turn.
_SEED_LOCK: Final = 0x7362_0002


class Store(ApiStore, ApplicationStore, SubscriptionStore, TierStore, DeveloperStore):
    """The aggregates over one database; an async context manager: entering creates the
    engine and migrates the schema.

    ``clock`` (epoch seconds) is what the WebSub part reads for leases and queue times;
    stored APIs' expressions are checked against ``expressions`` (``gateway.limits``)."""

    def __init__(
        self,
        url: URL,
        *,
        clock: Callable[[], float] = time.time,
        expressions: CelLimits = DEFAULT_LIMITS,
    ) -> None:
        super().__init__(Database(url))
        self._webhooks = WebhookStore(self._db, clock=clock)
        self._expressions = expressions
        self._copiers = CopierLeases(self._db, clock=clock)
        self._nodes = NodeStore(self._db, clock=clock)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        clock: Callable[[], float] = time.time,
        expressions: CelLimits = DEFAULT_LIMITS,
    ) -> Store:
        """``gateway.state``: ``sqlite:///path.db`` or ``postgresql://user:pw@host/db``."""
        return cls(engine_url(url), clock=clock, expressions=expressions)

    def __repr__(self) -> str:
        return f"Store({self._db.name!r})"

    @property
    def webhooks(self) -> WebhookStore:
        """WebSub subscriptions and the webhook delivery queue (bridge.store.webhooks)."""
        return self._webhooks

    @property
    def copiers(self) -> CopierLeases:
        """The cluster log's copier leases and epochs (bridge.store.copiers)."""
        return self._copiers

    @property
    def nodes(self) -> NodeStore:
        """The heartbeats of a cluster's gateways (bridge.store.nodes)."""
        return self._nodes

    async def __aenter__(self) -> Store:
        await self._db.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._db.__aexit__(*exc_info)

    async def ping(self) -> bool:
        """For /readyz (CONTRACT §9): can the store answer within PING_TIMEOUT?"""
        try:
            async with asyncio.timeout(PING_TIMEOUT), self._db.transaction(write=False) as conn:
                await conn.execute(select(1))
        except (StoreError, TimeoutError):
            return False
        return True

    async def revision(self) -> int:
        async with self._db.transaction(write=False) as conn:
            return await revision(conn)

    async def snapshot(self) -> Snapshot:
        """Everything the gateway serves from, at one revision."""
        ordered_subscriptions = select(subscriptions).order_by(
            subscriptions.c.client_id, subscriptions.c.api, subscriptions.c.version
        )
        async with self._db.transaction(write=False) as conn:
            number = await revision(conn)
            api_rows = await conn.execute(
                select(apis.c.name, apis.c.version, apis.c.document).order_by(
                    apis.c.name, apis.c.version
                )
            )
            app_rows = await conn.execute(select(applications).order_by(applications.c.client_id))
            sub_rows = await conn.execute(ordered_subscriptions)
            tier_rows = await conn.execute(select(tiers.c.name, tiers.c.document))
            return Snapshot(
                revision=number,
                apis=[
                    api
                    for row in api_rows
                    if (api := _parsed(self._api, row.document, f"API {row.name} {row.version}"))
                    is not None
                ],
                applications=[from_row(ApplicationRecord, row._mapping) for row in app_rows],
                subscriptions=[from_row(SubscriptionRecord, row._mapping) for row in sub_rows],
                # A tier that no longer validates stays fatal: skipped, its
                # subscriptions would run without its limits.
                tiers={row.name: tier_from(row.document) for row in tier_rows},
            )

    def _api(self, document: Any) -> Api:
        return api_from(document, self._expressions)

    async def seed(self, config: Config) -> None:
        """Store the config file's objects by the seeding rule of :mod:`bridge.store.seeding`;
        the revision goes up once if anything changed."""
        fingerprints = await seeding.fingerprints(config)
        async with self._db.transaction(write=True) as conn:
            if self._db.postgres:
                await conn.execute(select(func.pg_advisory_xact_lock(_SEED_LOCK)))
            if await seeding.seed(conn, config, fingerprints):
                await bump(conn)


def _parsed(parse: Callable[[Any], _T], document: Any, what: str) -> _T | None:
    """A stored document as its model, or None when it no longer validates: one bad
    document (edited by hand, written by another release) is skipped with a warning
    naming it, and the gateway serves the rest (CONTRACT §4c)."""
    try:
        return parse(document)
    except StoreError as exc:
        log.warning(
            "a document in the state store is skipped", extra={"document": what, "error": str(exc)}
        )
        return None
