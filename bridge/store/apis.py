"""The APIs of the state store (CONTRACT §8): one stored document per name and version."""

from __future__ import annotations

from sqlalchemy import ColumnElement, delete, insert, select, update

from bridge.config import Api, expression_context, stored_document
from bridge.errors import Conflict, NotFound
from bridge.expressions import DEFAULT_LIMITS, CelLimits
from bridge.store.queries import Aggregate, bump, exists, from_document
from bridge.store.schema import apis, subscriptions


def api_key(name: str, version: str) -> ColumnElement[bool]:
    return (apis.c.name == name) & (apis.c.version == version)


def api_from(document: object, expressions: CelLimits = DEFAULT_LIMITS) -> Api:
    """A stored API, its expressions checked against ``expressions`` (the running
    ``gateway.limits``, CONTRACT §4c)."""
    return from_document(Api, document, "API", expression_context(expressions))


class ApiStore(Aggregate):
    _expressions: CelLimits = DEFAULT_LIMITS  # set by Store from gateway.limits

    async def get_api(self, name: str, version: str) -> Api | None:
        async with self._db.transaction(write=False) as conn:
            document = await conn.scalar(select(apis.c.document).where(api_key(name, version)))
        return None if document is None else api_from(document, self._expressions)

    async def create_api(self, api: Api) -> None:
        async with self._db.transaction(write=True) as conn:
            if await exists(conn, select(apis.c.name).where(api_key(api.name, api.version))):
                raise Conflict(f"API {api.name} {api.version} already exists")
            await conn.execute(
                insert(apis).values(
                    name=api.name, version=api.version, document=stored_document(api)
                )
            )
            await bump(conn)

    async def update_api(self, api: Api) -> None:
        async with self._db.transaction(write=True) as conn:
            result = await conn.execute(
                update(apis)
                .where(api_key(api.name, api.version))
                .values(document=stored_document(api))
            )
            if result.rowcount == 0:
                raise NotFound(f"no API {api.name} {api.version}")
            await bump(conn)

    async def delete_api(self, name: str, version: str) -> None:
        """Its subscriptions go with it."""
        async with self._db.transaction(write=True) as conn:
            await conn.execute(
                delete(subscriptions).where(
                    subscriptions.c.api == name, subscriptions.c.version == version
                )
            )
            result = await conn.execute(delete(apis).where(api_key(name, version)))
            if result.rowcount == 0:
                raise NotFound(f"no API {name} {version}")
            await bump(conn)
