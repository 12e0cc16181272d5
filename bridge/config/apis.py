"""The ``apis`` section (CONTRACT §2, §3): an API, its topics and their replay."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import (
    Field,
    PositiveInt,
    SecretStr,
    SerializationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from bridge.config.endpoints import Endpoint
from bridge.config.fields import Duration, Strict
from bridge.config.settings import CorsSettings
from bridge.config.steps import Step
from bridge.paths import path_parameters

REVEAL_SECRETS = "reveal_secrets"  # serialization context key: dump secrets in clear
CONTEXT = re.compile(r"(/([A-Za-z0-9_.~-]+|\{version\}))+")
VERSION = re.compile(r"[A-Za-z0-9_.~-]+")


def base_path(context: str, version: str) -> str:
    """CONTRACT §3: context with {version} replaced, else <context>/<version>."""
    if "{version}" in context:
        return context.replace("{version}", version)
    return f"{context}/{version}"


class Mask(Strict):
    columns: list[str]
    unless_scope: str | None = None


class Topic(Strict):
    name: str
    mode: Literal["subscribe", "publish", "both"] = "subscribe"
    # A broker API's backend channel. On an endpoint API (CONTRACT §13) it is derived:
    # the url_mapping (default: the topic name), appended to the endpoint URL.
    channel: str = ""
    url_mapping: str | None = None
    scopes: list[str] = []
    pipeline: list[Step] = []
    description: str | None = None
    content_type: str = "application/json"
    unwrap: bool = False
    snapshot: bool = False
    mask: Mask | None = None
    debezium: bool = False
    # Clients may narrow the stream with ?filter=<CEL> (CONTRACT §10).
    client_filters: bool = False
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

    @field_validator("url_mapping")
    @classmethod
    def _url_mapping(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"/[A-Za-z0-9_.~!$&'()*+,;=:@%/{}-]*", value):
            raise ValueError("must be a URL path such as /echo or /rooms/{room}")
        return value

    @model_validator(mode="after")
    def _channel_parameters(self) -> Topic:
        field = "url_mapping" if self.url_mapping is not None else "channel"
        missing = path_parameters(self.channel) - path_parameters(self.name)
        if missing:
            raise ValueError(
                f"{field} uses {{{', '.join(sorted(missing))}}} "
                "which the topic name does not declare"
            )
        return self


class Replay(Strict):
    max_events: PositiveInt = 1000
    max_age: Duration = 600.0
    # The bytes of events a channel's replay log keeps (their JSON; the newest is always
    # kept): a window of large events is bounded by size, not only by count (CONTRACT §4c).
    max_bytes: PositiveInt = 1_048_576

    @classmethod
    def covering(cls, replays: list[Replay]) -> Replay:
        """The window that holds each of ``replays`` (the default one when there is none)."""
        if not replays:
            return cls()
        return cls(
            max_events=max(r.max_events for r in replays),
            max_age=max(r.max_age for r in replays),
            max_bytes=max(r.max_bytes for r in replays),
        )


ApiState = Literal["CREATED", "PUBLISHED", "DEPRECATED", "RETIRED", "BLOCKED"]


class Api(Strict):
    name: str = Field(min_length=1)
    version: str = Field(min_length=1, pattern=f"^{VERSION.pattern}$")
    context: str
    protocol: Literal["sse", "websocket", "websub"] = "sse"
    broker: str | None = None
    endpoint: Endpoint | None = None  # instead of a broker (CONTRACT §13)
    tiers: list[str] = []
    state: ApiState = "PUBLISHED"
    description: str | None = None
    replay: Replay = Replay()
    cors: CorsSettings | None = None  # replaces gateway.cors on this API's URLs (§4b)
    topics: list[Topic] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _endpoint_channels(cls, data: Any) -> Any:
        """An endpoint API's topics read the channel their url_mapping names."""
        if not isinstance(data, dict) or data.get("endpoint") is None:
            return data
        topics = data.get("topics")
        if not isinstance(topics, list):
            return data
        derived: list[Any] = []
        for topic in topics:
            if isinstance(topic, dict):
                topic = {**topic, "channel": topic.get("url_mapping") or topic.get("name")}
            elif isinstance(topic, Topic):
                topic = topic.model_copy(update={"channel": topic.url_mapping or topic.name})
            derived.append(topic)
        return {**data, "topics": derived}

    @field_validator("context")
    @classmethod
    def _context(cls, value: str) -> str:
        if not CONTEXT.fullmatch(value):
            raise ValueError("must be a path such as /orders or /{version}/orders")
        return value

    @property
    def base_path(self) -> str:
        """CONTRACT §3: the URL path of the API, under which its topics are."""
        return base_path(self.context, self.version)

    @property
    def source(self) -> str:
        """What its topics read from: the broker's name, or ``endpoint:<name>/<version>``."""
        if self.broker is not None:
            return self.broker
        return f"endpoint:{self.name}/{self.version}"


def stored_document(api: Api) -> dict[str, Any]:
    """An API as the state store keeps it: JSON with its webhook secrets in clear."""
    return api.model_dump(mode="json", context={REVEAL_SECRETS: True})
