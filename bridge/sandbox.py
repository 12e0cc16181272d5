"""Sandbox keys of an application (CONTRACT §13), as WSO2 API Manager has them.

An application's sandbox keys are a second client id and secret, stored as an
application record of their own named ``<client_id>~sandbox`` (a client id the
management API does not let anyone else take). Their tokens name the owning
application as ``client_id`` (its subscriptions apply) and carry ``"key_type":
"SANDBOX"``: they reach an endpoint API's sandbox endpoint, and nothing else.
"""

from __future__ import annotations

SANDBOX = "SANDBOX"
_SUFFIX = "~sandbox"


def sandbox_client_id(owner: str) -> str:
    return owner + _SUFFIX


def owner_of(client_id: str) -> str | None:
    """The application whose sandbox keys ``client_id`` is, or None (production keys)."""
    return client_id.removesuffix(_SUFFIX) if client_id.endswith(_SUFFIX) else None


def keys_record_id(client_id: str, key_type: str | None) -> str:
    """The application record holding the keys a token of ``key_type`` was issued for."""
    return sandbox_client_id(client_id) if key_type == SANDBOX else client_id
