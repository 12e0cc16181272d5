"""Client secrets: stored only as a slow, salted hash (scrypt, RFC 7914), compared in
constant time."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets

_N, _R, _P = 2**14, 8, 1
_PREFIX = "scrypt"


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def new_generation(previous: int | None = None) -> int:
    """A random key generation (claim ``sbg``), never ``previous``: tokens carry it, and a
    re-created or re-seeded application with the same client id must not make the old
    tokens valid again, as a counter restarting at 1 would (CONTRACT §4c). 31 bits, so it
    fits PostgreSQL's INTEGER."""
    while True:
        generation = secrets.randbits(31)
        if generation not in (0, previous):
            return generation


def hash_secret(secret: str) -> str:
    salt = secrets.token_bytes(16)
    return encoded_hash(salt, salted_digest(secret, salt))


def salted_digest(secret: str, salt: bytes) -> bytes:
    """The slow part: scrypt of ``secret`` with ``salt``. CPU-bound, run it off the loop."""
    return hashlib.scrypt(secret.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)


def encoded_hash(salt: bytes, digest: bytes) -> str:
    """A :func:`salted_digest` as :func:`verify_secret` reads it."""
    encode = base64.urlsafe_b64encode
    return f"{_PREFIX}${_N}${_R}${_P}${encode(salt).decode()}${encode(digest).decode()}"


def verify_secret(secret: str, encoded: str) -> bool:
    try:
        prefix, n, r, p, salt, digest = encoded.split("$")
        if prefix != _PREFIX:
            return False
        expected = base64.urlsafe_b64decode(digest)
        actual = hashlib.scrypt(
            secret.encode(),
            salt=base64.urlsafe_b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


@functools.cache
def dummy_hash() -> str:
    """A hash of a random secret: verifying against it costs what a real check costs, so an
    unknown client id takes as long to refuse as a wrong secret. Made on first use, not at
    import: every process importing this module (each gateway, worker and CLI) paid a
    scrypt for it."""
    return hash_secret(secrets.token_urlsafe(32))
