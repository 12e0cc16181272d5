"""Token issuing and verification at the edge: our own keys plus trusted issuers' JWKS.

External key sets are fetched with an async client (no blocking I/O on the event loop),
cached, and fetched again at most every ``REFRESH_COOLDOWN`` seconds when a token names
an unknown key (key rotation).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx

from bridge.config import AuthSettings
from bridge.errors import Unauthenticated
from bridge.policy import Grant
from bridge.store import Store
from bridge.tokens import (
    SigningKey,
    TokenIssuer,
    TrustedKeys,
    VerifiedTokens,
    new_signing_key,
    signing_key_from_pem,
    verify_token,
)

log = logging.getLogger("streambridge.auth")
REFRESH_COOLDOWN = 5.0  # at most one JWKS fetch per issuer this often


class TokenAuthority:
    def __init__(self, auth: AuthSettings, key: SigningKey) -> None:
        self.settings = auth
        self.issuer = TokenIssuer(
            key, issuer=auth.issuer, audience=auth.audience, ttl=auth.token_ttl
        )
        self.trusted: dict[str, TrustedKeys] = {
            auth.issuer: TrustedKeys(auth.issuer, auth.audience, {key.kid: key.public_jwk()})
        }
        self._external = {t.issuer: t for t in auth.trusted_issuers}
        self._fetched_at: dict[str, float] = {}
        # Only with trusted issuers, at their first fetch: a client loads the CA bundle.
        self._http: httpx.AsyncClient | None = None
        # Reconnect storms: a known token costs a lookup (cleared on catalogue changes).
        self.verified = VerifiedTokens()

    @classmethod
    async def open(cls, auth: AuthSettings, store: Store) -> TokenAuthority:
        """The signing key lives in the state store, so tokens survive restarts and every
        gateway on one store signs with the same key; the first start creates it."""
        stored = await store.signing_key(auth.signing_alg)
        if stored is None:
            key, pem = new_signing_key(auth.signing_alg)
            await store.add_signing_key(key.kid, auth.signing_alg, pem)
            stored = await store.signing_key(auth.signing_alg)  # another gateway may have won
            assert stored is not None
        kid, pem = stored
        authority = cls(auth, signing_key_from_pem(auth.signing_alg, kid, pem))
        await authority.refresh_all()
        return authority

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.issuer.key.public_jwk()]}

    async def refresh(self, issuer: str) -> None:
        settings = self._external[issuer]
        self._fetched_at[issuer] = time.monotonic()
        try:
            if self._http is None:
                self._http = httpx.AsyncClient(timeout=5.0, follow_redirects=False)
            response = await self._http.get(settings.jwks_url)
            response.raise_for_status()
            keys = {k["kid"]: k for k in response.json().get("keys", []) if "kid" in k}
        except (httpx.HTTPError, ValueError, AttributeError, TypeError) as exc:
            log.warning("could not fetch the JWKS", extra={"issuer": issuer, "error": str(exc)})
            return
        self.trusted[issuer] = TrustedKeys(issuer, settings.audience, keys)
        self.verified.clear()  # a key dropped from the set no longer verifies anything

    async def refresh_all(self) -> None:
        for issuer in self._external:
            await self.refresh(issuer)

    async def verify(self, token: str) -> Grant:
        grant = self.verified.get(token, time.time())
        if grant is not None:
            return grant
        grant = await self._verify(token)
        self.verified.put(token, grant)
        return grant

    def verify_now(self, token: str) -> Grant:
        """``verify`` without the await: Unauthenticated also where ``verify`` could still
        fetch a rotated key set (the caller then asks ``verify``)."""
        grant = self.verified.get(token, time.time())
        if grant is None:
            grant = verify_token(token, self.trusted)
            self.verified.put(token, grant)
        return grant

    async def _verify(self, token: str) -> Grant:
        try:
            return verify_token(token, self.trusted)
        except Unauthenticated as exc:
            issuer = _unverified_issuer(token)
            if (
                issuer in self._external
                and exc.detail in ("unknown signing key", "untrusted issuer")
                and time.monotonic() - self._fetched_at.get(issuer, -1e9) > REFRESH_COOLDOWN
            ):
                await self.refresh(issuer)
                return verify_token(token, self.trusted)
            raise


def _unverified_issuer(token: str) -> str | None:
    import jwt

    try:
        issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
    except jwt.PyJWTError:
        return None
    return issuer if isinstance(issuer, str) else None
