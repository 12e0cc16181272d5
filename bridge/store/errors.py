"""What the state store raises; every database error is mapped to one of these once, in
:mod:`bridge.store.store`, so callers never see SQLAlchemy or driver exceptions.

    BridgeError
    └── StoreError     the store failed (unreachable, broken schema, bad URL)
        ├── Conflict   the change clashes with what is stored (duplicate key, object in use)
        └── NotFound   the change names an object that is not stored
"""

from __future__ import annotations

from bridge.errors import BridgeError


class StoreError(BridgeError):
    """The state store failed; the message never holds a password or a secret."""


class Conflict(StoreError):
    pass


class NotFound(StoreError):
    pass
