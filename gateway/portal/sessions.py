"""Portal sessions (CONTRACT §12): HttpOnly, SameSite=Strict cookies, CSRF tokens and a
limit on failed sign-ins.

The cookie holds a random token; the store keeps only its sha256, with the session's CSRF
token, which the page reads from ``GET /portal/api/session`` and sends back as
``X-CSRF-Token`` on every state-changing request. Every portal write must be JSON (or a
multipart upload carrying the header), which a cross-site form cannot send without a
preflight; and the portal answers no CORS, so that preflight fails.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Callable
from typing import Literal

from fastapi import HTTPException, Request, Response

from bridge.store import PortalSession
from gateway.runtime import Runtime

COOKIE = "streambridge_portal"
SESSION_SECONDS = 8 * 3600
SAFE_METHODS = ("GET", "HEAD")
Role = Literal["developer", "publisher", "any"]


def session_id(cookie: str) -> str:
    return hashlib.sha256(cookie.encode()).hexdigest()


class Sessions:
    """Opens, finds and closes the sessions of one gateway's portal."""

    def __init__(self, runtime: Runtime, clock: Callable[[], float] = time.time) -> None:
        self.runtime = runtime
        self.clock = clock

    @property
    def _secure(self) -> bool:
        return self.runtime.config.gateway.public_url.startswith("https://")

    async def open(self, response: Response, username: str | None) -> PortalSession:
        assert self.runtime.store is not None
        cookie = secrets.token_urlsafe(32)
        now = self.clock()
        session = PortalSession(username, secrets.token_urlsafe(24), now + SESSION_SECONDS)
        await self.runtime.store.open_session(session_id(cookie), session, now)
        response.set_cookie(
            COOKIE,
            cookie,
            max_age=SESSION_SECONDS,
            path="/portal",
            httponly=True,
            samesite="strict",
            secure=self._secure,
        )
        return session

    async def close(self, request: Request, response: Response) -> None:
        assert self.runtime.store is not None
        cookie = request.cookies.get(COOKIE)
        if cookie:
            await self.runtime.store.close_session(session_id(cookie))
        response.delete_cookie(COOKIE, path="/portal", httponly=True, samesite="strict")

    async def find(self, request: Request) -> PortalSession | None:
        assert self.runtime.store is not None
        cookie = request.cookies.get(COOKIE)
        if not cookie:
            return None
        return await self.runtime.store.session(session_id(cookie), self.clock())

    async def require(self, request: Request, role: Role = "developer") -> PortalSession:
        """The request's session, CSRF-checked when it changes state; else 401/403."""
        session = await self.find(request)
        if session is None:
            raise HTTPException(401, "sign in first")
        if request.method not in SAFE_METHODS:
            sent = request.headers.get("x-csrf-token", "")
            if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
                raise HTTPException(403, "the CSRF token is missing or wrong")
        if role == "publisher" and not session.publisher:
            raise HTTPException(403, "this needs a publisher session (the admin token)")
        if role == "developer" and session.publisher:
            raise HTTPException(403, "this needs a developer session")
        return session


class SignInLimiter:
    """At most ``attempts`` failed sign-ins per rolling minute per key (a username, an
    address), counted in the state store: every gateway sharing it holds the same limit,
    and a restart does not reset it. Wall-clock time, as the gateways share it."""

    WINDOW = 60.0

    def __init__(
        self, runtime: Runtime, attempts: int = 10, clock: Callable[[], float] = time.time
    ) -> None:
        self.runtime = runtime
        self.attempts = attempts
        self.clock = clock

    async def check(self, *keys: str) -> None:
        """429 with Retry-After while any key is over its limit."""
        assert self.runtime.store is not None
        now = self.clock()
        failures = await self.runtime.store.sign_in_failures(keys, now - self.WINDOW)
        for times in failures.values():
            if len(times) >= self.attempts:
                # Free again once enough of them are a minute old.
                wait = times[len(times) - self.attempts] + self.WINDOW - now
                raise HTTPException(
                    429,
                    "too many failed sign-ins; try again later",
                    {"Retry-After": str(max(1, math.ceil(wait)))},
                )

    async def failed(self, *keys: str) -> None:
        assert self.runtime.store is not None
        now = self.clock()
        await self.runtime.store.sign_in_failed(keys, now, now - self.WINDOW)
