"""Names shared by AsyncAPI export and import."""

from __future__ import annotations

import re

from bridge.errors import BridgeError

SCHEME = "oauth2"
MESSAGE = "event"
_KEY_JUNK = re.compile(r"[^A-Za-z0-9_.-]+")
_SEGMENT_JUNK = re.compile(r"[^A-Za-z0-9_.~-]+")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_VERSION = re.compile(r"^([23])\.\d+\.\d+(-[0-9A-Za-z.-]+)?$")


class AsyncApiError(BridgeError):
    """The document does not parse or does not map onto an API; ``where`` is its path."""

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"{where}: {reason}" if where else reason)
