"""The gateway-wide sections of the config (CONTRACT §2): ``gateway``, ``auth``, ``websub``."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import NonNegativeInt, PositiveInt, SecretStr, field_validator, model_validator

from bridge.config.fields import Duration, Strict
from bridge.expressions import CelLimits

DATA_DIR_NAME = "streambridge-data"


def default_data_dir(state: str, environ: Mapping[str, str]) -> Path:
    """Where a gateway keeps its files when ``gateway.data_dir`` is not set.

    Beside a SQLite state file (``sqlite:///var/sb/state.db`` -> ``/var/sb/streambridge-data``;
    a relative file, like the store's, is relative to the working directory). A store that
    is no local file (PostgreSQL) leaves the files to the user's state directory,
    ``$XDG_STATE_HOME/streambridge`` (XDG Base Directory: unset, empty or relative means
    ``~/.local/state``).
    """
    if state.startswith("sqlite:///"):
        database = state.removeprefix("sqlite:///").partition("?")[0]
        if database and database != ":memory:":
            return Path(database).parent / DATA_DIR_NAME
    xdg = environ.get("XDG_STATE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".local" / "state"
    return base / "streambridge"


ORIGIN = re.compile(r"^https?://[^/\s?#]+/?$")


class CorsSettings(Strict):
    """CONTRACT §4b: the web origins that may read the gateway's answers (``*``: every one)."""

    allow_origins: list[str] = []

    @field_validator("allow_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        bad = [origin for origin in value if origin != "*" and not ORIGIN.match(origin)]
        if bad:
            raise ValueError(
                f"origins are scheme://host[:port] without a path, or *; not {', '.join(bad)}"
            )
        return [origin.rstrip("/") for origin in value]


class Limits(Strict):
    """Bounds that keep one client from stopping the others (CONTRACT §4c)."""

    header_timeout: Duration = 10.0  # the request line and headers arrive within this
    max_header_bytes: PositiveInt = 65_536  # 431 above
    max_body_bytes: PositiveInt = 1_048_576  # 413 above, before the body is read further
    max_topics_per_stream: PositiveInt = 50  # 400 above
    max_idle_hubs: PositiveInt = 1000  # least recently used idle hubs close past this
    token_attempts_per_minute: PositiveInt = 30  # failed POST /oauth2/token, then 429
    max_pending_verifications: PositiveInt = 10  # WebSub intents in flight per application
    cel_max_length: PositiveInt = 4096
    cel_max_depth: PositiveInt = 32
    step_budget: Duration = 0.05  # one CEL evaluation on one event
    # The kernel send buffer of each connection (SO_SNDBUF; 0: the kernel's autotuning, up
    # to megabytes). Bounded, a slow client's backlog stays in its queue, where lag is
    # signalled, conflation applies and the slow-client cut sees it (CONTRACT §5, §10).
    send_buffer_bytes: NonNegativeInt = 131_072
    publish_timeout: Duration = 10.0  # a broker's confirmation of a WebSocket publish, else nack

    @property
    def expressions(self) -> CelLimits:
        """What every CEL expression of this gateway is checked against at load."""
        return CelLimits(max_length=self.cel_max_length, max_depth=self.cel_max_depth)


class GatewaySettings(Strict):
    public_url: str = "http://127.0.0.1:8080"
    state: str = "sqlite:///streambridge.db"
    admin_token: SecretStr | None = None
    max_message_bytes: PositiveInt = 1_048_576
    heartbeat: Duration = 15.0
    # A WebSocket whose ping has had no answer for this long is closed with 1011, as
    # websockets' ping_timeout (a peer gone without a FIN); one with writes still buffered
    # is the slow-client rule's (CONTRACT §5), not this one's.
    ping_timeout: Duration = 20.0
    client_queue: PositiveInt = 1024
    # Gather each client's writes for this long and write them together (issue 14): fewer
    # system calls under load, up to this much more latency. Off (None) by default.
    coalesce: Duration | None = None
    # TCP_NODELAY on event streams (SSE, WebSocket subscribers), as asyncio and Go servers
    # set it. false: Nagle's algorithm, as nginx leaves nchan's subscribers: while the client
    # has not acknowledged the last packet, the kernel gathers the next events into one
    # (fewer packets under load: about half the system time per delivery at N=1000 on
    # loopback, BENCHMARKS.md), at the cost of up to the client's delayed-ACK time per event.
    tcp_nodelay: bool = True
    cors: CorsSettings = CorsSettings()
    # Local files of this gateway: the durable replay logs of MQTT, AMQP and CDC channels.
    # Relative paths are relative to the working directory; unset, see data_path.
    data_dir: str | None = None
    limits: Limits = Limits()

    @property
    def data_path(self) -> Path:
        """``data_dir``, or when unset :func:`default_data_dir` of the state store."""
        if self.data_dir is not None:
            return Path(self.data_dir)
        return default_data_dir(self.state, os.environ)

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("state")
    @classmethod
    def _state(cls, value: str) -> str:
        if not value.startswith(("sqlite://", "postgresql://", "postgresql+asyncpg://")):
            raise ValueError("must be a sqlite:/// or postgresql:// URL")
        return value

    @field_validator("coalesce")
    @classmethod
    def _coalesce(cls, value: float | None) -> float | None:
        if value is not None and value > 0.1:
            raise ValueError("must be at most 100ms (it delays every event by up to this)")
        return value

    @field_validator("heartbeat")
    @classmethod
    def _heartbeat(cls, value: float) -> float:
        if value > 15:
            raise ValueError("must be at most 15s (CONTRACT §5)")
        return value


class TrustedIssuer(Strict):
    issuer: str
    jwks_url: str
    audience: str = "streambridge"

    @field_validator("jwks_url")
    @classmethod
    def _jwks_url(cls, value: str) -> str:
        if not re.match(r"^https?://", value):
            raise ValueError("must be an http:// or https:// URL")
        return value


class AuthSettings(Strict):
    issuer: str = "streambridge"
    audience: str = "streambridge"
    token_ttl: PositiveInt = 3600
    signing_alg: Literal["ES256", "RS256"] = "ES256"
    trusted_issuers: list[TrustedIssuer] = []


class RetrySettings(Strict):
    max_attempts: PositiveInt = 10
    first_delay: Duration = 1.0
    max_delay: Duration = 3600.0


class WebSubSettings(Strict):
    allow_private_callbacks: bool = False
    default_lease_seconds: PositiveInt = 864_000
    min_lease_seconds: PositiveInt = 60
    max_lease_seconds: PositiveInt = 2_592_000  # 30 days
    retry: RetrySettings = RetrySettings()
    timeout: Duration = 10.0  # per delivery attempt and per verification request
    # Gateways sharing a store: one delivers webhooks at a time, holding this lease; when
    # it stops renewing (crash), another takes over after at most this long.
    leader_lease: Duration = 10.0

    @model_validator(mode="after")
    def _lease_bounds(self) -> WebSubSettings:
        if not self.min_lease_seconds <= self.default_lease_seconds <= self.max_lease_seconds:
            raise ValueError(
                "needs min_lease_seconds <= default_lease_seconds <= max_lease_seconds"
            )
        return self


class PortalSettings(Strict):
    """CONTRACT §12: whether developers may create their own accounts at /portal/."""

    self_signup: bool = False
