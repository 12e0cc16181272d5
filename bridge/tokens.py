"""OAuth2 access tokens as JWTs (RFC 7519, RFC 9068 claims), validated per RFC 8725.

Signing uses an asymmetric key that persists across restarts; verification accepts
only asymmetric algorithms from an allow-list, checks ``exp``/``nbf`` with at most
60 s leeway and ``iss``/``aud`` exactly.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from bridge.errors import Unauthenticated
from bridge.policy import Grant

ALLOWED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
LEEWAY_SECONDS = 60
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True, slots=True)
class SigningKey:
    algorithm: str
    kid: str
    private_key: PrivateKey

    def public_jwk(self) -> dict[str, Any]:
        public = self.private_key.public_key()
        if isinstance(public, ec.EllipticCurvePublicKey):
            jwk: dict[str, Any] = ECAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        return {**jwk, "kid": self.kid, "alg": self.algorithm, "use": "sig"}


def _generate(algorithm: str) -> PrivateKey:
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def new_signing_key(algorithm: str) -> tuple[SigningKey, str]:
    """A fresh key and its PKCS#8 PEM (for the state store)."""
    private = _generate(algorithm)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return SigningKey(algorithm, secrets.token_urlsafe(12), private), pem


def signing_key_from_pem(algorithm: str, kid: str, pem: str) -> SigningKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError("the stored signing key is neither EC nor RSA")
    return SigningKey(algorithm, kid, key)


class TokenIssuer:
    def __init__(self, key: SigningKey, *, issuer: str, audience: str, ttl: int) -> None:
        self.key = key
        self.issuer = issuer
        self.audience = audience
        self.ttl = ttl

    def issue(
        self,
        client_id: str,
        scopes: frozenset[str],
        now: float,
        generation: int = 1,
        key_type: str | None = None,
    ) -> str:
        claims: dict[str, Any] = {
            "sbg": generation,
            "iss": self.issuer,
            "sub": client_id,
            "aud": self.audience,
            "client_id": client_id,
            "iat": int(now),
            "nbf": int(now),
            "exp": int(now) + self.ttl,
            "jti": secrets.token_urlsafe(16),
            "scope": " ".join(sorted(scopes)),
        }
        if key_type is not None:  # SANDBOX keys (CONTRACT §13)
            claims["key_type"] = key_type
        return jwt.encode(
            claims,
            self.key.private_key,
            algorithm=self.key.algorithm,
            headers={"kid": self.key.kid, "typ": "at+jwt"},
        )


@dataclass(frozen=True, slots=True)
class TrustedKeys:
    """Where tokens of one issuer are checked: its audience and its public JWKs by kid."""

    issuer: str
    audience: str
    keys: Mapping[str, Mapping[str, Any]]


class VerifiedTokens:
    """Grants of tokens already verified, by their signature, until they expire (issue 14).

    A reconnect storm of known tokens then costs a lookup, not a signature check. An entry
    holds the whole token (a signature is only reused with the header and claims it
    signed) and its grant, whose key generation the caller still checks against the
    catalogue on every use; the owner clears it whenever the catalogue or the trusted keys
    change. Bounded: at ``max_entries`` the oldest entry goes first.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._grants: dict[str, tuple[str, Grant]] = {}

    def get(self, token: str, now: float) -> Grant | None:
        signature = token[token.rfind(".") + 1 :]
        hit = self._grants.get(signature)
        if hit is None or hit[0] != token:
            return None
        grant = hit[1]
        if grant.expires_at <= now:
            del self._grants[signature]
            return None
        return grant

    def put(self, token: str, grant: Grant) -> None:
        grants = self._grants
        if len(grants) >= self.max_entries:
            del grants[next(iter(grants))]
        grants[token[token.rfind(".") + 1 :]] = (token, grant)

    def clear(self) -> None:
        self._grants.clear()

    def __len__(self) -> int:
        return len(self._grants)


def verify_token(token: str, trusted: Mapping[str, TrustedKeys]) -> Grant:
    """Verify signature, algorithm, exp/nbf, iss and aud; raise Unauthenticated on any failure."""
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise Unauthenticated("malformed token") from exc
    algorithm = header.get("alg")
    if algorithm not in ALLOWED_ALGORITHMS:
        raise Unauthenticated(f"algorithm {algorithm!r} is not accepted")
    issuer = unverified.get("iss")
    source = trusted.get(issuer) if isinstance(issuer, str) else None
    if source is None:
        raise Unauthenticated("untrusted issuer")
    kid = header.get("kid")
    if kid is None and len(source.keys) == 1:
        kid = next(iter(source.keys))
    jwk = source.keys.get(kid) if isinstance(kid, str) else None
    if jwk is None:
        raise Unauthenticated("unknown signing key")
    if _KEY_TYPES.get(algorithm[:2]) != jwk.get("kty") or jwk.get("alg", algorithm) != algorithm:
        raise Unauthenticated("the algorithm does not match the key")
    try:
        key = jwt.PyJWK(dict(jwk), algorithm=algorithm).key
        claims = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            audience=source.audience,
            issuer=source.issuer,
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "iss", "aud"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthenticated("the token has expired") from exc
    except jwt.PyJWTError as exc:
        raise Unauthenticated(f"invalid token: {exc}") from exc
    client_id = claims.get("client_id") or claims.get("azp") or claims.get("sub")
    if not isinstance(client_id, str):
        raise Unauthenticated("the token names no client")
    # RFC 9068 `scope` is a space-separated string; IdPs without it send `scp`, as a
    # string (Entra ID) or a list (Okta).
    scope = claims["scope"] if "scope" in claims else claims.get("scp", "")
    if isinstance(scope, str):
        scopes = frozenset(scope.split())
    elif isinstance(scope, list):
        scopes = frozenset(s for s in scope if isinstance(s, str))
    else:
        scopes = frozenset()
    generation, key_type, subject = claims.get("sbg"), claims.get("key_type"), claims.get("sub")
    return Grant(
        client_id,
        scopes,
        float(claims["exp"]),
        source.issuer,
        claims.get("jti"),
        generation if isinstance(generation, int) else None,
        key_type if isinstance(key_type, str) else None,
        subject if isinstance(subject, str) else None,
    )
