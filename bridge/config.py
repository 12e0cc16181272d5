"""Configuration models (CONTRACT §2), validated whole from the first release.

Parsing is two passes: pydantic checks shapes and field values (CEL compiles, durations
parse), then :func:`semantic_problems` checks what spans fields (unknown broker or tier,
duplicate context). Every problem names its field path: ``apis[2].topics[0].pipeline[1].filter``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    PositiveInt,
    SecretStr,
    SerializationInfo,
    Tag,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from bridge.durations import format_duration, parse_duration
from bridge.errors import ConfigError, Problem
from bridge.expressions import compile_aggregate, compile_expression
from bridge.paths import path_parameters

REVEAL_SECRETS = "reveal_secrets"  # serialization context key: dump secrets in clear

Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# --- gateway, auth, websub -------------------------------------------------------------


class GatewaySettings(_Strict):
    public_url: str = "http://127.0.0.1:8080"
    state: str = "sqlite:///streambridge.db"
    admin_token: SecretStr | None = None
    max_message_bytes: PositiveInt = 1_048_576
    heartbeat: Duration = 15.0
    client_queue: PositiveInt = 1024
    # Local files of this gateway: the durable replay logs of MQTT and AMQP channels.
    # Relative paths are relative to the working directory.
    data_dir: str = "streambridge-data"

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

    @field_validator("heartbeat")
    @classmethod
    def _heartbeat(cls, value: float) -> float:
        if value > 15:
            raise ValueError("must be at most 15s (CONTRACT §5)")
        return value


class TrustedIssuer(_Strict):
    issuer: str
    jwks_url: str
    audience: str = "streambridge"

    @field_validator("jwks_url")
    @classmethod
    def _jwks_url(cls, value: str) -> str:
        if not re.match(r"^https?://", value):
            raise ValueError("must be an http:// or https:// URL")
        return value


class AuthSettings(_Strict):
    issuer: str = "streambridge"
    audience: str = "streambridge"
    token_ttl: PositiveInt = 3600
    signing_alg: Literal["ES256", "RS256"] = "ES256"
    trusted_issuers: list[TrustedIssuer] = []


class RetrySettings(_Strict):
    max_attempts: PositiveInt = 10
    first_delay: Duration = 1.0
    max_delay: Duration = 3600.0


class WebSubSettings(_Strict):
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


# --- brokers: discriminated on ``type`` ---------------------------------------------------


class KafkaBroker(_Strict):
    type: Literal["kafka"]
    bootstrap: str


def _require_scheme(value: str, scheme: str) -> str:
    if not re.match(rf"^{scheme}s?://", value):
        raise ValueError(f"must be an {scheme}:// or {scheme}s:// URL")
    return value


class MqttBroker(_Strict):
    type: Literal["mqtt"]
    url: str
    qos: Literal[0, 1, 2] = 1
    client_id: str | None = None

    _url = field_validator("url")(lambda value: _require_scheme(value, "mqtt"))


class AmqpBroker(_Strict):
    type: Literal["amqp"]
    url: str
    exchange: str = "amq.topic"
    prefetch: PositiveInt = 256

    _url = field_validator("url")(lambda value: _require_scheme(value, "amqp"))


class PostgresCdcBroker(_Strict):
    type: Literal["postgres-cdc"]
    dsn: str
    slot: str = "streambridge"
    publication: str = "streambridge"


class MemoryBroker(_Strict):
    type: Literal["memory"]


Broker = Annotated[
    KafkaBroker | MqttBroker | AmqpBroker | PostgresCdcBroker | MemoryBroker,
    Field(discriminator="type"),
]


class Tier(_Strict):
    events_per_minute: PositiveInt | None = None
    max_connections: PositiveInt | None = None


# --- pipeline steps: a one-key mapping, discriminated by that key --------------------------


class FilterStep(_Strict):
    filter: str

    @field_validator("filter")
    @classmethod
    def _compiles(cls, value: str) -> str:
        compile_expression(value)
        return value


class MapStep(_Strict):
    map: str

    @field_validator("map")
    @classmethod
    def _compiles(cls, value: str) -> str:
        compile_expression(value)
        return value


class WindowSpec(_Strict):
    tumbling: Duration | None = None
    sliding: Duration | None = None
    every: Duration | None = None
    group_by: str | None = None
    aggregate: dict[str, str]

    @field_validator("group_by")
    @classmethod
    def _group_by(cls, value: str | None) -> str | None:
        if value is not None:
            compile_expression(value)
        return value

    @field_validator("aggregate")
    @classmethod
    def _aggregates(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("needs at least one aggregate, e.g. {n: count()}")
        for name, spec in value.items():
            if name in ("group", "window_start", "window_end"):
                raise ValueError(f"aggregate name {name!r} is reserved")
            try:
                compile_aggregate(spec)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> WindowSpec:
        if (self.tumbling is None) == (self.sliding is None):
            raise ValueError("give exactly one of tumbling or sliding")
        if self.sliding is not None:
            if self.every is None:
                raise ValueError("a sliding window needs every")
            ratio = self.sliding / self.every
            if self.every > self.sliding or abs(ratio - round(ratio)) > 1e-9:
                raise ValueError("sliding must be a whole multiple of every")
        elif self.every is not None:
            raise ValueError("every applies to sliding windows only")
        return self


class WindowStep(_Strict):
    window: WindowSpec


class DedupeSpec(_Strict):
    key: str
    within: Duration

    @field_validator("key")
    @classmethod
    def _compiles(cls, value: str) -> str:
        compile_expression(value)
        return value


class DedupeStep(_Strict):
    dedupe: DedupeSpec


class SampleSpec(_Strict):
    max: PositiveInt
    per: Duration
    group_by: str | None = None

    @field_validator("group_by")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            compile_expression(value)
        return value


class SampleStep(_Strict):
    sample: SampleSpec


STEP_KINDS = ("filter", "map", "window", "dedupe", "sample")


def _step_kind(value: Any) -> str | None:
    if isinstance(value, dict) and len(value) == 1:
        (kind,) = value
        return kind if kind in STEP_KINDS else None
    if isinstance(value, BaseModel):
        return next(k for k in STEP_KINDS if k in type(value).model_fields)
    return None


Step = Annotated[
    Annotated[FilterStep, Tag("filter")]
    | Annotated[MapStep, Tag("map")]
    | Annotated[WindowStep, Tag("window")]
    | Annotated[DedupeStep, Tag("dedupe")]
    | Annotated[SampleStep, Tag("sample")],
    Discriminator(
        _step_kind,
        custom_error_type="invalid_step",
        custom_error_message="a step is a mapping with exactly one of "
        "filter, map, window, dedupe, sample",
    ),
]


# --- APIs and topics ------------------------------------------------------------------------


class Mask(_Strict):
    columns: list[str]
    unless_scope: str | None = None


class Topic(_Strict):
    name: str
    mode: Literal["subscribe", "publish", "both"] = "subscribe"
    channel: str
    scopes: list[str] = []
    pipeline: list[Step] = []
    description: str | None = None
    content_type: str = "application/json"
    unwrap: bool = False
    snapshot: bool = False
    mask: Mask | None = None
    debezium: bool = False
    # Inbound webhooks on a WebSub publish topic: the HMAC key of X-Hub-Signature-256.
    # Masked in every dump but the state store's (see stored_document).
    webhook_secret: SecretStr | None = None

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            secret = value.get_secret_value()
            if len(secret) < 16:
                raise ValueError("must be at least 16 characters")
            if set(secret) == {"*"}:
                raise ValueError("is masked; send the secret itself")
        return value

    @field_serializer("webhook_secret", when_used="json")
    def _dump_webhook_secret(self, value: SecretStr | None, info: SerializationInfo) -> str | None:
        if value is None:
            return None
        context = info.context
        if isinstance(context, dict) and context.get(REVEAL_SECRETS):
            return value.get_secret_value()
        return "**********"

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(r"(/([A-Za-z0-9_.~-]+|\{[A-Za-z_][A-Za-z0-9_]*\}))+", value):
            raise ValueError(
                "must be a path such as /created or /by-region/{region} "
                "(segments of letters, digits, _ . ~ - or a {parameter})"
            )
        return value

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: list[str]) -> list[str]:
        for scope in value:
            if not re.fullmatch(r"[\x21\x23-\x5b\x5d-\x7e]+", scope):
                raise ValueError(f"invalid scope {scope!r} (RFC 6749 §3.3)")
        return value

    @model_validator(mode="after")
    def _channel_parameters(self) -> Topic:
        missing = path_parameters(self.channel) - path_parameters(self.name)
        if missing:
            raise ValueError(
                f"channel uses {{{', '.join(sorted(missing))}}} "
                "which the topic name does not declare"
            )
        return self


class Replay(_Strict):
    max_events: PositiveInt = 1000
    max_age: Duration = 600.0


def stored_document(api: Api) -> dict[str, Any]:
    """An API as the state store keeps it: JSON with its webhook secrets in clear."""
    return api.model_dump(mode="json", context={REVEAL_SECRETS: True})


ApiState = Literal["CREATED", "PUBLISHED", "DEPRECATED", "RETIRED", "BLOCKED"]


class Api(_Strict):
    name: str = Field(min_length=1)
    version: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.~-]+$")
    context: str
    protocol: Literal["sse", "websocket", "websub"] = "sse"
    broker: str
    tiers: list[str] = []
    state: ApiState = "PUBLISHED"
    description: str | None = None
    replay: Replay = Replay()
    topics: list[Topic] = Field(min_length=1)

    @field_validator("context")
    @classmethod
    def _context(cls, value: str) -> str:
        if not re.fullmatch(r"(/([A-Za-z0-9_.~-]+|\{version\}))+", value):
            raise ValueError("must be a path such as /orders or /{version}/orders")
        return value

    @property
    def base_path(self) -> str:
        """CONTRACT §3: context with {version} replaced, else <context>/<version>."""
        if "{version}" in self.context:
            return self.context.replace("{version}", self.version)
        return f"{self.context}/{self.version}"


class SubscriptionSeed(_Strict):
    api: str
    version: str
    tier: str
    state: Literal["ACTIVE", "BLOCKED"] = "ACTIVE"


class Application(_Strict):
    name: str = Field(min_length=1)
    client_id: str = Field(min_length=1, pattern=r"^[\x21-\x39\x3b-\x7e]+$")
    client_secret: SecretStr
    subscriptions: list[SubscriptionSeed] = []

    @field_validator("client_secret")
    @classmethod
    def _secret(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 8:
            raise ValueError("must be at least 8 characters")
        return value


class Config(_Strict):
    gateway: GatewaySettings = GatewaySettings()
    auth: AuthSettings = AuthSettings()
    websub: WebSubSettings = WebSubSettings()
    brokers: dict[str, Broker] = {}
    tiers: dict[str, Tier] = {}
    apis: list[Api] = []
    applications: list[Application] = []


# --- loading ---------------------------------------------------------------------------------

RESERVED_PREFIXES = (
    "/api/v1",
    "/oauth2",
    "/.well-known",
    "/healthz",
    "/readyz",
    "/metrics",
    "/docs",
    "/openapi.json",
    "/redoc",
)
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "required",
}


BROKER_TYPES = ("kafka", "mqtt", "amqp", "postgres-cdc", "memory")


def format_path(loc: tuple[int | str, ...]) -> str:
    """pydantic's loc as the user wrote it; union tags pydantic inserts are left out."""
    out = ""
    previous: int | str | None = None
    for index, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == previous and part in STEP_KINDS:
            continue  # the tagged-union tag repeats the step's key
        elif index == 2 and loc[0] == "brokers" and part in BROKER_TYPES:
            continue  # brokers.<name>.<type tag>.field
        else:
            out += f".{part}" if out else str(part)
        previous = part
    return out


def expand_env(node: Any, path: str, problems: list[Problem], env: dict[str, str]) -> Any:
    """Replace ${VAR} and ${VAR:-default} in every string scalar of the YAML tree."""
    if isinstance(node, dict):
        return {
            k: expand_env(v, f"{path}.{k}" if path else str(k), problems, env)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [expand_env(v, f"{path}[{i}]", problems, env) for i, v in enumerate(node)]
    if isinstance(node, str):

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            problems.append(Problem(path, f"environment variable {name} is not set"))
            return ""

        return _ENV.sub(substitute, node)
    return node


def parse_config(raw: Any, env: dict[str, str] | None = None) -> Config:
    """Validate a parsed YAML/JSON tree; raises ConfigError naming every problem."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([Problem("", "the config must be a mapping at the top level")])
    problems: list[Problem] = []
    expanded = expand_env(raw, "", problems, dict(os.environ) if env is None else env)
    try:
        config = Config.model_validate(expanded)
    except ValidationError as exc:
        problems += [
            Problem(
                format_path(err["loc"]),
                _MESSAGES.get(err["type"], err["msg"]).removeprefix("Value error, "),
            )
            for err in exc.errors()
        ]
        raise ConfigError(problems) from exc
    problems += semantic_problems(config)
    if problems:
        raise ConfigError(problems)
    return config


def load_config(path: str | Path, env: dict[str, str] | None = None) -> Config:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem("", f"cannot read {path}: {exc.strerror}")]) from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([Problem("", f"{path} is not valid YAML: {exc}")]) from exc
    return parse_config(raw, env)


def semantic_problems(config: Config) -> list[Problem]:
    """Checks that span fields: references, duplicates, protocol/mode combinations."""
    problems: list[Problem] = []
    seen_ids: dict[tuple[str, str], int] = {}
    seen_paths: dict[str, int] = {}
    for i, api in enumerate(config.apis):
        at = f"apis[{i}]"
        if api.broker not in config.brokers:
            known = ", ".join(sorted(config.brokers)) or "none defined"
            problems.append(
                Problem(f"{at}.broker", f"unknown broker {api.broker!r} (known: {known})")
            )
        for j, tier in enumerate(api.tiers):
            if tier not in config.tiers:
                problems.append(Problem(f"{at}.tiers[{j}]", f"unknown tier {tier!r}"))
        if (api.name, api.version) in seen_ids:
            problems.append(
                Problem(
                    f"{at}.version",
                    f"duplicate API {api.name} {api.version} "
                    f"(also apis[{seen_ids[(api.name, api.version)]}])",
                )
            )
        seen_ids.setdefault((api.name, api.version), i)
        base = api.base_path
        clash = next(
            (
                j
                for p, j in seen_paths.items()
                if base == p or base.startswith(p + "/") or p.startswith(base + "/")
            ),
            None,
        )
        if clash is not None:
            problems.append(
                Problem(
                    f"{at}.context",
                    f"duplicate context: {base} overlaps "
                    f"apis[{clash}] ({config.apis[clash].base_path})",
                )
            )
        seen_paths.setdefault(base, i)
        if base.startswith(RESERVED_PREFIXES):
            problems.append(Problem(f"{at}.context", f"{base} is reserved for the gateway itself"))
        names: set[str] = set()
        for k, topic in enumerate(api.topics):
            tat = f"{at}.topics[{k}]"
            if topic.name in names:
                problems.append(Problem(f"{tat}.name", f"duplicate topic {topic.name}"))
            names.add(topic.name)
            if topic.mode == "both" and api.protocol != "websocket":
                problems.append(Problem(f"{tat}.mode", "mode both needs protocol websocket"))
            if topic.mode != "subscribe" and api.protocol == "sse":
                problems.append(
                    Problem(
                        f"{tat}.mode",
                        f"mode {topic.mode} needs protocol websocket or websub; SSE only sends",
                    )
                )
            if topic.pipeline and topic.mode == "publish":
                problems.append(Problem(f"{tat}.pipeline", "a publish topic has no pipeline"))
            if topic.webhook_secret is not None and (
                api.protocol != "websub" or topic.mode != "publish"
            ):
                problems.append(
                    Problem(
                        f"{tat}.webhook_secret",
                        "only a publish topic of a websub API takes inbound webhooks",
                    )
                )
            if api.protocol == "websub" and topic.name == "/hub":
                problems.append(Problem(f"{tat}.name", "/hub is the hub of a websub API"))
    client_ids: dict[str, int] = {}
    for i, app in enumerate(config.applications):
        at = f"applications[{i}]"
        if app.client_id in client_ids:
            problems.append(
                Problem(
                    f"{at}.client_id",
                    f"duplicate client_id (also applications[{client_ids[app.client_id]}])",
                )
            )
        client_ids.setdefault(app.client_id, i)
        for j, sub in enumerate(app.subscriptions):
            sat = f"{at}.subscriptions[{j}]"
            api_match = next(
                (a for a in config.apis if a.name == sub.api and a.version == sub.version), None
            )
            if api_match is None:
                problems.append(Problem(f"{sat}.api", f"unknown API {sub.api} {sub.version}"))
            if sub.tier not in config.tiers:
                problems.append(Problem(f"{sat}.tier", f"unknown tier {sub.tier!r}"))
            elif api_match is not None and api_match.tiers and sub.tier not in api_match.tiers:
                problems.append(
                    Problem(
                        f"{sat}.tier",
                        f"tier {sub.tier} is not offered by "
                        f"{sub.api} {sub.version} ({', '.join(api_match.tiers)})",
                    )
                )
    return problems
