"""The state store: APIs, applications, subscriptions, tiers and signing keys, kept in
SQLite (the default) or PostgreSQL (issue 3) through SQLAlchemy's asyncio engine.

Every mutation bumps the one-row revision counter in its own transaction, so gateways
sharing a database notice each other's changes by polling :meth:`Store.revision` and
reading a :meth:`Store.snapshot`. The schema is migrated with Alembic when the store
opens. Database errors are mapped to :mod:`bridge.store.errors` here and nowhere else.

A snapshot is read in one transaction (REPEATABLE READ on PostgreSQL), so it never mixes
two revisions. Connection set-up and migrations live in :mod:`bridge.store.engine`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Final

from pydantic import ValidationError
from sqlalchemy import ColumnElement, Select, Table, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, RowMapping
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bridge.config import Api, Config, Tier, stored_document
from bridge.errors import Conflict, NotFound, StoreError
from bridge.store import schema, seeding
from bridge.store.engine import (
    WRITE,
    engine_url,
    is_postgres,
    migration_lock,
    open_engine,
    upgrade_to_head,
)
from bridge.store.records import ApplicationRecord, Snapshot, SubscriptionRecord
from bridge.store.schema import apis, applications, signing_keys, subscriptions, tiers
from bridge.store.webhooks import WebhookStore

SUBSCRIPTION_STATES: Final = ("ACTIVE", "BLOCKED")
PING_TIMEOUT: Final = 2.0
# pg_advisory_xact_lock key: gateways starting together on one database seed in turn.
_SEED_LOCK: Final = 0x7362_0002


class Store:
    """An async context manager: entering creates the engine and migrates the schema."""

    def __init__(self, url: URL) -> None:
        self._url = url
        self._engine: AsyncEngine | None = None

    @classmethod
    def from_url(cls, url: str) -> Store:
        """``gateway.state``: ``sqlite:///path.db`` or ``postgresql://user:pw@host/db``."""
        return cls(engine_url(url))

    def __repr__(self) -> str:
        return f"Store({self._url.render_as_string(hide_password=True)!r})"

    @property
    def webhooks(self) -> WebhookStore:
        """WebSub subscriptions and the webhook delivery queue (bridge.store.webhooks)."""
        return WebhookStore(self)

    @property
    def _postgres(self) -> bool:
        return is_postgres(self._url)

    def _insert(self, table: Table) -> postgresql.Insert | sqlite.Insert:
        """An INSERT with the dialect's ON CONFLICT clause (both spell it the same)."""
        return postgresql.insert(table) if self._postgres else sqlite.insert(table)

    # --- life cycle -----------------------------------------------------------------------

    async def __aenter__(self) -> Store:
        self._engine = await open_engine(self._url)
        try:
            async with migration_lock(), self._transaction(write=True) as conn:
                await conn.run_sync(upgrade_to_head)
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._close()

    async def _close(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            await engine.dispose()

    @asynccontextmanager
    async def _transaction(self, *, write: bool) -> AsyncIterator[AsyncConnection]:
        """One transaction, committed when the block ends; driver errors become StoreError."""
        if self._engine is None:
            raise StoreError(f"{self!r} is not open (use it as an async context manager)")
        try:
            async with self._engine.connect() as conn:
                if write:
                    await conn.execution_options(**{WRITE: True})
                elif self._postgres:
                    await conn.execution_options(isolation_level="REPEATABLE READ")
                async with conn.begin():
                    yield conn
        except IntegrityError as exc:
            raise Conflict(f"conflicts with the stored state: {exc.orig}") from exc
        except DBAPIError as exc:
            raise StoreError(f"state store {self!r} failed: {exc.orig}") from exc
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"state store {self!r} failed: {exc}") from exc

    async def ping(self) -> bool:
        """For /readyz (CONTRACT §9): can the store answer within PING_TIMEOUT?"""
        try:
            async with asyncio.timeout(PING_TIMEOUT), self._transaction(write=False) as conn:
                await conn.execute(select(1))
        except (StoreError, TimeoutError):
            return False
        return True

    async def revision(self) -> int:
        async with self._transaction(write=False) as conn:
            return await _revision(conn)

    async def snapshot(self) -> Snapshot:
        async with self._transaction(write=False) as conn:
            number = await _revision(conn)
            api_rows = await conn.execute(
                select(apis.c.document).order_by(apis.c.name, apis.c.version)
            )
            app_rows = await conn.execute(select(applications).order_by(applications.c.client_id))
            sub_rows = await conn.execute(
                select(subscriptions).order_by(
                    subscriptions.c.client_id, subscriptions.c.api, subscriptions.c.version
                )
            )
            tier_rows = await conn.execute(select(tiers.c.name, tiers.c.document))
            return Snapshot(
                revision=number,
                apis=[_api(row.document) for row in api_rows],
                applications=[_application(row._mapping) for row in app_rows],
                subscriptions=[_subscription(row._mapping) for row in sub_rows],
                tiers={row.name: _tier(row.document) for row in tier_rows},
            )

    # --- APIs -----------------------------------------------------------------------------

    async def get_api(self, name: str, version: str) -> Api | None:
        async with self._transaction(write=False) as conn:
            document = await conn.scalar(select(apis.c.document).where(_api_key(name, version)))
        return None if document is None else _api(document)

    async def create_api(self, api: Api) -> None:
        async with self._transaction(write=True) as conn:
            if await _exists(conn, select(apis.c.name).where(_api_key(api.name, api.version))):
                raise Conflict(f"API {api.name} {api.version} already exists")
            await conn.execute(
                insert(apis).values(
                    name=api.name, version=api.version, document=stored_document(api)
                )
            )
            await _bump(conn)

    async def update_api(self, api: Api) -> None:
        async with self._transaction(write=True) as conn:
            result = await conn.execute(
                update(apis)
                .where(_api_key(api.name, api.version))
                .values(document=stored_document(api))
            )
            if result.rowcount == 0:
                raise NotFound(f"no API {api.name} {api.version}")
            await _bump(conn)

    async def delete_api(self, name: str, version: str) -> None:
        async with self._transaction(write=True) as conn:
            await conn.execute(
                delete(subscriptions).where(
                    subscriptions.c.api == name, subscriptions.c.version == version
                )
            )
            result = await conn.execute(delete(apis).where(_api_key(name, version)))
            if result.rowcount == 0:
                raise NotFound(f"no API {name} {version}")
            await _bump(conn)

    # --- applications ---------------------------------------------------------------------

    async def get_application(self, client_id: str) -> ApplicationRecord | None:
        async with self._transaction(write=False) as conn:
            row = (
                await conn.execute(
                    select(applications).where(applications.c.client_id == client_id)
                )
            ).first()
        return None if row is None else _application(row._mapping)

    async def create_application(self, record: ApplicationRecord) -> None:
        where = applications.c.client_id == record.client_id
        async with self._transaction(write=True) as conn:
            if await _exists(conn, select(applications.c.client_id).where(where)):
                raise Conflict(f"application {record.client_id} already exists")
            await conn.execute(
                insert(applications).values(
                    client_id=record.client_id,
                    name=record.name,
                    secret_hash=record.secret_hash,
                    generation=record.generation,
                )
            )
            await _bump(conn)

    async def set_application_secret(self, client_id: str, secret_hash: str) -> ApplicationRecord:
        """A regenerated secret; the generation goes up so tokens of the old one stop
        working (their ``sbg`` claim no longer matches)."""
        where = applications.c.client_id == client_id
        async with self._transaction(write=True) as conn:
            result = await conn.execute(
                update(applications)
                .where(where)
                .values(secret_hash=secret_hash, generation=applications.c.generation + 1)
            )
            if result.rowcount == 0:
                raise NotFound(f"no application {client_id}")
            row = (await conn.execute(select(applications).where(where))).one()
            await _bump(conn)
        return _application(row._mapping)

    async def delete_application(self, client_id: str) -> None:
        async with self._transaction(write=True) as conn:
            await conn.execute(delete(subscriptions).where(subscriptions.c.client_id == client_id))
            result = await conn.execute(
                delete(applications).where(applications.c.client_id == client_id)
            )
            if result.rowcount == 0:
                raise NotFound(f"no application {client_id}")
            await _bump(conn)

    # --- subscriptions --------------------------------------------------------------------

    async def create_subscription(
        self, client_id: str, api: str, version: str, tier: str
    ) -> SubscriptionRecord:
        """NotFound when the application, the API or the tier is not stored."""
        record = SubscriptionRecord(
            id=schema.new_subscription_id(),
            client_id=client_id,
            api=api,
            version=version,
            tier=tier,
        )
        async with self._transaction(write=True) as conn:
            if not await _exists(
                conn, select(applications.c.client_id).where(applications.c.client_id == client_id)
            ):
                raise NotFound(f"no application {client_id}")
            if not await _exists(conn, select(apis.c.name).where(_api_key(api, version))):
                raise NotFound(f"no API {api} {version}")
            if not await _exists(conn, select(tiers.c.name).where(tiers.c.name == tier)):
                raise NotFound(f"no tier {tier}")
            taken = select(subscriptions.c.id).where(
                subscriptions.c.client_id == client_id,
                subscriptions.c.api == api,
                subscriptions.c.version == version,
            )
            if await _exists(conn, taken):
                raise Conflict(f"application {client_id} is already subscribed to {api} {version}")
            await conn.execute(
                insert(subscriptions).values(
                    id=record.id,
                    client_id=client_id,
                    api=api,
                    version=version,
                    tier=tier,
                    state=record.state,
                )
            )
            await _bump(conn)
        return record

    async def get_subscription(self, id: str) -> SubscriptionRecord | None:
        async with self._transaction(write=False) as conn:
            row = (
                await conn.execute(select(subscriptions).where(subscriptions.c.id == id))
            ).first()
        return None if row is None else _subscription(row._mapping)

    async def set_subscription_state(self, id: str, state: str) -> SubscriptionRecord:
        if state not in SUBSCRIPTION_STATES:
            raise ValueError(f"a subscription state is one of {', '.join(SUBSCRIPTION_STATES)}")
        where = subscriptions.c.id == id
        async with self._transaction(write=True) as conn:
            result = await conn.execute(update(subscriptions).where(where).values(state=state))
            if result.rowcount == 0:
                raise NotFound(f"no subscription {id}")
            row = (await conn.execute(select(subscriptions).where(where))).one()
            await _bump(conn)
        return _subscription(row._mapping)

    async def delete_subscription(self, id: str) -> None:
        async with self._transaction(write=True) as conn:
            result = await conn.execute(delete(subscriptions).where(subscriptions.c.id == id))
            if result.rowcount == 0:
                raise NotFound(f"no subscription {id}")
            await _bump(conn)

    # --- tiers ----------------------------------------------------------------------------

    async def put_tier(self, name: str, tier: Tier) -> None:
        document = tier.model_dump(mode="json")
        statement = self._insert(tiers).values(name=name, document=document)
        statement = statement.on_conflict_do_update(
            index_elements=[tiers.c.name], set_={"document": document}
        )
        async with self._transaction(write=True) as conn:
            await conn.execute(statement)
            await _bump(conn)

    async def delete_tier(self, name: str) -> None:
        async with self._transaction(write=True) as conn:
            used = await conn.scalar(
                select(func.count()).select_from(subscriptions).where(subscriptions.c.tier == name)
            )
            if used:
                raise Conflict(f"tier {name} is used by {used} subscription(s)")
            result = await conn.execute(delete(tiers).where(tiers.c.name == name))
            if result.rowcount == 0:
                raise NotFound(f"no tier {name}")
            await _bump(conn)

    # --- signing keys ---------------------------------------------------------------------

    async def signing_key(self, algorithm: str) -> tuple[str, str] | None:
        """(kid, private key PEM) of the key for ``algorithm``, shared by every gateway on
        this store so a token one of them signed verifies on all."""
        async with self._transaction(write=False) as conn:
            row = (
                await conn.execute(
                    select(signing_keys.c.kid, signing_keys.c.pem).where(
                        signing_keys.c.algorithm == algorithm
                    )
                )
            ).first()
        return None if row is None else (row.kid, row.pem)

    async def add_signing_key(self, kid: str, algorithm: str, pem: str) -> None:
        """Insert if no key for ``algorithm`` exists yet, else do nothing: of gateways
        racing at first start one key wins, and each reads it back with signing_key()."""
        statement = self._insert(signing_keys).values(kid=kid, algorithm=algorithm, pem=pem)
        statement = statement.on_conflict_do_nothing(index_elements=[signing_keys.c.algorithm])
        async with self._transaction(write=True) as conn:
            result = await conn.execute(statement)
            if result.rowcount:
                await _bump(conn)

    # --- seeding --------------------------------------------------------------------------

    async def seed(self, config: Config, hash_secret: Callable[[str], str]) -> None:
        """Store the config file's objects by the seeding rule of :mod:`bridge.store.seeding`;
        the revision goes up once if anything changed."""
        fingerprints = await seeding.fingerprints(config)
        async with self._transaction(write=True) as conn:
            if self._postgres:
                await conn.execute(select(func.pg_advisory_xact_lock(_SEED_LOCK)))
            if await seeding.seed(conn, config, hash_secret, fingerprints):
                await _bump(conn)


# --- helpers ------------------------------------------------------------------------------


async def _bump(conn: AsyncConnection) -> None:
    await conn.execute(
        update(schema.revision)
        .where(schema.revision.c.id == 1)
        .values(value=schema.revision.c.value + 1)
    )


async def _revision(conn: AsyncConnection) -> int:
    value = await conn.scalar(select(schema.revision.c.value).where(schema.revision.c.id == 1))
    if value is None:
        raise StoreError("the state store has no revision row; its schema is broken")
    return int(value)


async def _exists(conn: AsyncConnection, query: Select[Any]) -> bool:
    return (await conn.execute(query.limit(1))).first() is not None


def _api_key(name: str, version: str) -> ColumnElement[bool]:
    return (apis.c.name == name) & (apis.c.version == version)


def _api(document: Any) -> Api:
    try:
        return Api.model_validate(document)
    except ValidationError as exc:
        raise StoreError(f"a stored API no longer validates: {exc}") from exc


def _tier(document: Any) -> Tier:
    try:
        return Tier.model_validate(document)
    except ValidationError as exc:
        raise StoreError(f"a stored tier no longer validates: {exc}") from exc


def _application(row: RowMapping) -> ApplicationRecord:
    return ApplicationRecord(
        client_id=row["client_id"],
        name=row["name"],
        secret_hash=row["secret_hash"],
        generation=row["generation"],
    )


def _subscription(row: RowMapping) -> SubscriptionRecord:
    return SubscriptionRecord(
        id=row["id"],
        client_id=row["client_id"],
        api=row["api"],
        version=row["version"],
        tier=row["tier"],
        state=row["state"],
    )
