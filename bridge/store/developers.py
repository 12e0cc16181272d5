"""Developer accounts, the applications they own, and the portal's sessions (CONTRACT
§12). None of this is catalogue: no revision bump, gateways read it on each request."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, insert, select, update

from bridge.errors import Conflict, NotFound
from bridge.store.queries import Aggregate, exists
from bridge.store.schema import (
    developer_applications,
    developers,
    portal_sessions,
    sign_in_failures,
)


@dataclass(frozen=True, slots=True)
class PortalSession:
    """A signed-in browser: a developer's (``username``) or a publisher's (None)."""

    username: str | None
    csrf: str
    expires_at: float

    @property
    def publisher(self) -> bool:
        return self.username is None


class DeveloperStore(Aggregate):
    async def create_developer(self, username: str, password_hash: str, now: float) -> None:
        where = developers.c.username == username
        async with self._db.transaction(write=True) as conn:
            if await exists(conn, select(developers.c.username).where(where)):
                raise Conflict(f"the username {username} is taken")
            await conn.execute(
                insert(developers).values(
                    username=username, password_hash=password_hash, created_at=now
                )
            )

    async def set_password(self, username: str, password_hash: str, now: float) -> None:
        """Create the account, or give an existing one this password (the demo's account)."""
        where = developers.c.username == username
        async with self._db.transaction(write=True) as conn:
            if await exists(conn, select(developers.c.username).where(where)):
                await conn.execute(
                    update(developers).where(where).values(password_hash=password_hash)
                )
            else:
                await conn.execute(
                    insert(developers).values(
                        username=username, password_hash=password_hash, created_at=now
                    )
                )

    async def password_hash(self, username: str) -> str | None:
        query = select(developers.c.password_hash).where(developers.c.username == username)
        async with self._db.transaction(write=False) as conn:
            return await conn.scalar(query)

    async def developers(self) -> list[str]:
        query = select(developers.c.username).order_by(developers.c.username)
        async with self._db.transaction(write=False) as conn:
            return list((await conn.scalars(query)).all())

    async def delete_developer(self, username: str) -> None:
        """Their sessions end with them; their applications stay (an operator's call)."""
        async with self._db.transaction(write=True) as conn:
            await conn.execute(
                delete(portal_sessions).where(portal_sessions.c.username == username)
            )
            await conn.execute(
                delete(developer_applications).where(developer_applications.c.username == username)
            )
            result = await conn.execute(delete(developers).where(developers.c.username == username))
            if result.rowcount == 0:
                raise NotFound(f"no developer {username}")

    # --- ownership -----------------------------------------------------------------------
    async def own_application(self, username: str, client_id: str) -> None:
        async with self._db.transaction(write=True) as conn:
            await conn.execute(
                insert(developer_applications).values(client_id=client_id, username=username)
            )

    async def applications_of(self, username: str) -> list[str]:
        query = select(developer_applications.c.client_id).where(
            developer_applications.c.username == username
        )
        async with self._db.transaction(write=False) as conn:
            return list((await conn.scalars(query)).all())

    # --- sessions ------------------------------------------------------------------------
    async def open_session(self, session_id: str, session: PortalSession, now: float) -> None:
        """Store a new session; expired ones of anybody go at the same time."""
        async with self._db.transaction(write=True) as conn:
            await conn.execute(delete(portal_sessions).where(portal_sessions.c.expires_at <= now))
            await conn.execute(
                insert(portal_sessions).values(
                    id=session_id,
                    username=session.username,
                    csrf=session.csrf,
                    expires_at=session.expires_at,
                )
            )

    async def session(self, session_id: str, now: float) -> PortalSession | None:
        """The live session of that id; None when unknown, expired or its developer gone."""
        query = select(portal_sessions).where(
            portal_sessions.c.id == session_id, portal_sessions.c.expires_at > now
        )
        async with self._db.transaction(write=False) as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return PortalSession(row.username, row.csrf, row.expires_at)

    async def close_session(self, session_id: str) -> None:
        async with self._db.transaction(write=True) as conn:
            await conn.execute(delete(portal_sessions).where(portal_sessions.c.id == session_id))

    # --- failed sign-ins -----------------------------------------------------------------
    async def sign_in_failures(self, keys: Sequence[str], since: float) -> dict[str, list[float]]:
        """When each key failed to sign in after ``since``, oldest first (keys without
        failures are absent)."""
        query = (
            select(sign_in_failures.c.key, sign_in_failures.c.at)
            .where(sign_in_failures.c.key.in_(keys), sign_in_failures.c.at > since)
            .order_by(sign_in_failures.c.at)
        )
        found: dict[str, list[float]] = {}
        async with self._db.transaction(write=False) as conn:
            for key, at in (await conn.execute(query)).all():
                found.setdefault(key, []).append(at)
        return found

    async def sign_in_failed(self, keys: Sequence[str], now: float, forget_before: float) -> None:
        """Count a failed sign-in for each key; anybody's failures before ``forget_before``
        go at the same time, so the table holds about a minute of failures."""
        async with self._db.transaction(write=True) as conn:
            await conn.execute(
                delete(sign_in_failures).where(sign_in_failures.c.at < forget_before)
            )
            await conn.execute(insert(sign_in_failures), [{"key": k, "at": now} for k in keys])
