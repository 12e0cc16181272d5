"""From an HTTP/WebSocket request to an admitted stream, or the AccessDenied that refuses it.

The rules are ``bridge.policy.authorize``; this module only gathers its inputs from the
request (token, path, query) and from the catalogue.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl

from bridge.catalog import ApiEntry, TopicMatch
from bridge.client_filter import compile_client_filter
from bridge.config import Api, Target, Tier
from bridge.errors import (
    AccessDenied,
    BridgeError,
    InvalidFilter,
    NoSandbox,
    TooManyTopics,
    Unauthenticated,
    UnknownResource,
    UpstreamUnavailable,
)
from bridge.expressions import Expression
from bridge.policy import Grant, SubscriptionState, authorize
from bridge.sandbox import keys_record_id
from gateway.errors import Answer, answer
from gateway.logs import bind
from gateway.runtime import Runtime
from gateway.upstreams import target_of

log = logging.getLogger("streambridge.access")


@dataclass(frozen=True, slots=True)
class Admitted:
    grant: Grant
    api: Api
    topics: list[TopicMatch]
    subscription: SubscriptionState
    tier: Tier
    multi: bool  # several topics by ?topic=: events carry ``event: <topic>``
    client_filter: Expression | None = None  # ?filter= (CONTRACT §10)

    @property
    def key(self) -> tuple[str, str, str]:
        return self.subscription.key

    @property
    def target(self) -> Target:
        """The endpoint the key reaches on an endpoint API (CONTRACT §13)."""
        return target_of(self.grant.key_type)


def query_params(scope: Mapping[str, object]) -> list[tuple[str, str]]:
    raw = scope.get("query_string", b"")
    return parse_qsl(
        raw.decode("latin-1") if isinstance(raw, bytes) else "", keep_blank_values=True
    )


def bearer_token(headers: Mapping[str, str], query: list[tuple[str, str]]) -> str | None:
    """RFC 6750 §2.1 header, or §2.3 ``access_token`` query parameter (EventSource/WebSocket)."""
    authorization = headers.get("authorization", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    for name, value in query:
        if name == "access_token" and value:
            return value
    return None


def _topics(
    entry: ApiEntry,
    rest: str,
    query: list[tuple[str, str]],
    *,
    allow_multi: bool,
    max_topics: int,
) -> tuple[list[TopicMatch], bool]:
    requested = [v for k, v in query if k == "topic"]
    if rest == "" and requested and allow_multi:
        names = list(dict.fromkeys(requested))
        if len(names) > max_topics:  # each topic may hold a hub open (CONTRACT §4c)
            raise TooManyTopics(f"a stream names at most {max_topics} topics")
        multi = True
    else:
        names, multi = [rest], False
    matches = []
    for name in names:
        if not name.startswith("/"):
            name = "/" + name
        match = entry.topic(name)
        if match is None:
            raise UnknownResource(f"no topic {name} in this API")
        matches.append(match)
    return matches, multi


def _current_keys(runtime: Runtime, grant: Grant) -> bool:
    """Our tokens carry the application's key generation: regenerated keys, or a deleted
    application, revoke every token issued before."""
    assert runtime.authority is not None
    if grant.issuer != runtime.authority.issuer.issuer:
        return True
    app = runtime.catalog.applications.get(keys_record_id(grant.client_id, grant.key_type))
    return app is not None and grant.generation == app.generation


async def _verify_token(
    runtime: Runtime, headers: Mapping[str, str], query: list[tuple[str, str]]
) -> tuple[Grant | None, str | None]:
    """The request's grant, or why there is none (the first row of CONTRACT §4)."""
    assert runtime.authority is not None
    token = bearer_token(headers, query)
    if token is None:
        return None, "a bearer token is required"
    try:
        grant = await runtime.authority.verify(token)
    except Unauthenticated as exc:
        return None, exc.detail
    return _valid(runtime, grant)


def _valid(runtime: Runtime, grant: Grant) -> tuple[Grant | None, str | None]:
    # The verification leeway is for clock skew at the edges of validity; a
    # stream opened on a token already past exp would only be revoked at once.
    if grant.expires_at <= time.time():
        return None, "the token has expired"
    if not _current_keys(runtime, grant):
        return None, "the token was revoked"
    return grant, None


def admit_now(
    runtime: Runtime, *, path: str, headers: Mapping[str, str], query: list[tuple[str, str]]
) -> Admitted | None:
    """``admit`` for an SSE GET when it needs no await (a token verified at once, no key
    set to fetch): the admitted stream, or None when the answer is anything else (a
    refusal, a token to look at further); the caller then takes the full path, which
    decides and answers alike. Binds log fields as ``admit`` does."""
    assert runtime.authority is not None
    token = bearer_token(headers, query)
    if token is None:
        return None
    try:
        grant = runtime.authority.verify_now(token)
    except Unauthenticated:
        return None
    if _valid(runtime, grant)[0] is None:
        return None
    try:
        return decide(runtime, grant, None, path=path, query=query, protocol="sse")
    except BridgeError:
        return None


async def authenticate(
    runtime: Runtime, headers: Mapping[str, str], query: list[tuple[str, str]]
) -> Grant:
    """Only the token row of CONTRACT §4: a grant, or Unauthenticated."""
    grant, token_error = await _verify_token(runtime, headers, query)
    if grant is None:
        raise Unauthenticated(token_error or "a bearer token is required")
    return grant


async def admit(
    runtime: Runtime,
    *,
    path: str,
    headers: Mapping[str, str],
    query: list[tuple[str, str]],
    protocol: str,
) -> Admitted:
    """Apply CONTRACT §4 in table order; raises the first AccessDenied that applies.

    Binds what it learns (client, API, topics) to the request's log lines, refused or not.
    """
    grant, token_error = await _verify_token(runtime, headers, query)
    return decide(runtime, grant, token_error, path=path, query=query, protocol=protocol)


def decide(
    runtime: Runtime,
    grant: Grant | None,
    token_error: str | None,
    *,
    path: str,
    query: list[tuple[str, str]],
    protocol: str,
) -> Admitted:
    """The rows of CONTRACT §4 after the token's: ``admit`` once the token is verified."""
    resolved = runtime.catalog.resolve(path)
    topics: list[TopicMatch] = []
    multi = False
    topics_found = False
    api: Api | None = None
    if resolved is not None and grant is not None:
        entry, rest = resolved
        api = entry.api
        try:
            topics, multi = _topics(
                entry,
                rest,
                query,
                allow_multi=protocol in ("sse", "websocket"),
                max_topics=runtime.config.gateway.limits.max_topics_per_stream,
            )
            topics_found = True
        except UnknownResource:
            topics_found = False
    _bind_request(grant, resolved[0].api if resolved else None, topics, multi)
    subscription = runtime.catalog.subscription(grant.client_id, api) if grant and api else None
    authorize(
        grant=grant,
        token_error=token_error,
        api_state=api.state if api else None,
        api_protocol=api.protocol if api else None,
        topics_found=topics_found,
        requested_protocol=protocol,
        subscription=subscription,
        required_scopes={scope for match in topics for scope in match.topic.scopes},
    )
    assert grant is not None and api is not None and subscription is not None
    target = target_of(grant.key_type)
    if api.endpoint is not None:
        runtime.upstreams.admit(api, target)  # NoSandbox, EndpointSuspended (§13)
    elif target == "sandbox":
        raise NoSandbox("this API has no sandbox endpoint; use a production key")
    tier = runtime.catalog.tier(subscription.tier)
    return Admitted(grant, api, topics, subscription, tier, multi, _client_filter(topics, query))


def _client_filter(topics: list[TopicMatch], query: list[tuple[str, str]]) -> Expression | None:
    """The stream's ``?filter=``, compiled once (CONTRACT §10); InvalidFilter (400)."""
    sources = [value for name, value in query if name == "filter"]
    if not sources:
        return None
    if len(sources) > 1:
        raise InvalidFilter("filter: one filter per connection")
    closed = [match.name for match in topics if not match.topic.client_filters]
    if closed:
        raise InvalidFilter(f"filter: topic {', '.join(closed)} does not take client filters")
    return compile_client_filter(sources[0])


def _bind_request(
    grant: Grant | None, api: Api | None, topics: list[TopicMatch], multi: bool
) -> None:
    names = [match.name for match in topics]
    bind(
        client_id=grant.client_id if grant else None,
        api=api.name if api else None,
        version=api.version if api else None,
        broker=api.source if api else None,
        topic=(names if multi else names[0]) if names else None,
    )


def refused(runtime: Runtime, error: AccessDenied | UpstreamUnavailable) -> Answer:
    """Count and log a data-plane refusal (CONTRACT §4, §13: an unreachable upstream);
    the answer to send."""
    refusal = answer(error)
    runtime.metrics.rejected.labels(str(refusal.status)).inc()
    detail = error.detail if isinstance(error, AccessDenied) else str(error)
    log.info("refused", extra={"status": refusal.status, "detail": detail})
    return refusal
