"""Applications and the token signing keys of the state store (CONTRACT §3, §8)."""

from __future__ import annotations

from dataclasses import asdict

from sqlalchemy import delete, insert, select

from bridge.errors import Conflict, NotFound
from bridge.secrets import new_generation
from bridge.store.queries import Aggregate, bump, exists, from_row, update_one
from bridge.store.records import ApplicationRecord
from bridge.store.schema import applications, signing_keys, subscriptions


class ApplicationStore(Aggregate):
    async def get_application(self, client_id: str) -> ApplicationRecord | None:
        query = select(applications).where(applications.c.client_id == client_id)
        async with self._db.transaction(write=False) as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else from_row(ApplicationRecord, row._mapping)

    async def create_application(self, record: ApplicationRecord) -> None:
        where = applications.c.client_id == record.client_id
        async with self._db.transaction(write=True) as conn:
            if await exists(conn, select(applications.c.client_id).where(where)):
                raise Conflict(f"application {record.client_id} already exists")
            await conn.execute(insert(applications).values(**asdict(record)))
            await bump(conn)

    async def set_application_secret(self, client_id: str, secret_hash: str) -> ApplicationRecord:
        """A regenerated secret; a new random generation, so tokens of the old one stop
        working (their ``sbg`` claim no longer matches)."""
        where = applications.c.client_id == client_id
        async with self._db.transaction(write=True) as conn:
            previous = (await conn.execute(select(applications.c.generation).where(where))).first()
            values = {
                "secret_hash": secret_hash,
                "generation": new_generation(None if previous is None else previous.generation),
            }
            row = await update_one(conn, applications, where, values, f"no application {client_id}")
            await bump(conn)
        return from_row(ApplicationRecord, row)

    async def delete_application(self, client_id: str) -> None:
        """Its subscriptions go with it."""
        async with self._db.transaction(write=True) as conn:
            await conn.execute(delete(subscriptions).where(subscriptions.c.client_id == client_id))
            result = await conn.execute(
                delete(applications).where(applications.c.client_id == client_id)
            )
            if result.rowcount == 0:
                raise NotFound(f"no application {client_id}")
            await bump(conn)

    # --- signing keys ---------------------------------------------------------------------

    async def signing_key(self, algorithm: str) -> tuple[str, str] | None:
        """(kid, private key PEM) of the key for ``algorithm``, shared by every gateway on
        this store so a token one of them signed verifies on all."""
        query = select(signing_keys.c.kid, signing_keys.c.pem).where(
            signing_keys.c.algorithm == algorithm
        )
        async with self._db.transaction(write=False) as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else (row.kid, row.pem)

    async def add_signing_key(self, kid: str, algorithm: str, pem: str) -> None:
        """Insert if no key for ``algorithm`` exists yet, else do nothing: of gateways
        racing at first start one key wins, and each reads it back with signing_key()."""
        statement = self._db.insert(signing_keys).values(kid=kid, algorithm=algorithm, pem=pem)
        statement = statement.on_conflict_do_nothing(index_elements=[signing_keys.c.algorithm])
        async with self._db.transaction(write=True) as conn:
            result = await conn.execute(statement)
            if result.rowcount:
                await bump(conn)
