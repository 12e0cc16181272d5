"""The state store (issue 3): what the management API creates, kept across restarts and
shared by every gateway on one database. See :mod:`bridge.store.store`."""

from bridge.errors import Conflict, NotFound, StoreError
from bridge.store.developers import PortalSession
from bridge.store.records import ApplicationRecord, Snapshot, SubscriptionRecord
from bridge.store.store import Store

__all__ = [
    "ApplicationRecord",
    "Conflict",
    "NotFound",
    "PortalSession",
    "Snapshot",
    "Store",
    "StoreError",
    "SubscriptionRecord",
]
