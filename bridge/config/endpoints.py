"""An API's ``endpoint`` (CONTRACT §13): the existing SSE or WebSocket server it fronts.

Set by the admin, who is trusted: loopback and private addresses are allowed (unlike
WebSub callbacks, §7). Which schemes an API may use depends on its protocol; that check
spans fields and lives in ``checks``.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, PositiveInt, field_validator

from bridge.config.fields import Duration, Strict

SCHEMES = {"sse": ("http", "https"), "websocket": ("ws", "wss")}
Target = Literal["production", "sandbox"]


def endpoint_url_problem(url: str, protocol: str | None) -> str | None:
    """Why ``url`` cannot be the endpoint of an API of ``protocol``, or None."""
    schemes = SCHEMES.get(protocol or "", ("http", "https", "ws", "wss"))
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        return f"is not a URL ({exc})"
    if parts.scheme not in schemes:
        return f"must be a {' or '.join(s + '://' for s in schemes)} URL"
    if not parts.hostname:
        return "must name a host"
    if parts.query or parts.fragment:
        return "may not carry a query or fragment (topics append their url_mapping)"
    return None


class Suspension(Strict):
    """After ``after_failures`` consecutive failed connects, no attempt for ``for``."""

    model_config = ConfigDict(**Strict.model_config, serialize_by_alias=True)  # "for"

    after_failures: PositiveInt = 3
    for_: Duration = Field(30.0, alias="for", gt=0)


class Endpoint(Strict):
    production: str
    sandbox: str | None = None
    connect_timeout: Duration = Field(10.0, gt=0)
    suspend: Suspension = Field(default_factory=lambda: Suspension.model_validate({}))

    @field_validator("production", "sandbox")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None:
            problem = endpoint_url_problem(value, None)
            if problem is not None:
                raise ValueError(problem)
        return value

    def url(self, target: Target) -> str | None:
        return self.production if target == "production" else self.sandbox
