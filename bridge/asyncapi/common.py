"""Names shared by AsyncAPI export and import."""

from __future__ import annotations

import re

SCHEME = "oauth2"
MESSAGE = "event"
_KEY_JUNK = re.compile(r"[^A-Za-z0-9_.-]+")
_SEGMENT_JUNK = re.compile(r"[^A-Za-z0-9_.~-]+")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_VERSION = re.compile(r"^([23])\.\d+\.\d+(-[0-9A-Za-z.-]+)?$")
