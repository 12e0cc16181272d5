"""WebSub on the data plane (CONTRACT §7): the hub at ``<base>/hub``, topic discovery by
``GET`` on a topic URL, and inbound webhooks by ``POST`` on a ``publish`` topic.

Every request passes CONTRACT §4 (``gateway.access``) in its order: the token first,
then the API and topic, protocol, subscription, scopes, API state. An inbound webhook
may instead carry ``X-Hub-Signature-256: sha256=<hex HMAC of the body>`` made with the
topic's ``webhook_secret`` (GitHub's scheme), checked in constant time.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl, urlsplit

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from bridge.catalog import ApiEntry, TopicMatch
from bridge.errors import (
    AccessDenied,
    ApiBlocked,
    CallbackRefused,
    ConnectorError,
    HubRequestError,
    UnknownResource,
)
from bridge.event import Event, decode_payload
from bridge.lifecycle import VISIBLE_STATES
from bridge.wire.websub import link_header, parse_hub_request, verify_hub_signature
from gateway.access import admit, authenticate, bearer_token, query_params, refused
from gateway.errors import answer, problem
from gateway.runtime import Runtime
from gateway.websub.verify import Pending

log = logging.getLogger("streambridge.websub")
HUB_BODY_LIMIT = 64 * 1024
FORM = "application/x-www-form-urlencoded"


class _TooLarge(Exception):
    pass


async def read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def serve_websub(
    runtime: Runtime,
    scope: Scope,
    receive: Receive,
    send: Send,
    headers: dict[str, str],
    entry: ApiEntry,
    rest: str,
) -> None:
    method, path = scope["method"], scope["path"]
    try:
        if rest == "/hub":
            if method != "POST":
                response = problem(
                    405, "the hub takes POST", instance=path, headers={"Allow": "POST"}
                )
            else:
                response = await _hub(runtime, scope, receive, headers, entry)
        elif method in ("GET", "HEAD"):
            response = await _discovery(runtime, scope, headers, entry, rest)
        elif method == "POST":
            response = await _inbound(runtime, scope, receive, headers, entry, rest)
        else:
            allow = {"Allow": "GET, HEAD, POST"}
            response = problem(405, "topics answer GET and POST", instance=path, headers=allow)
    except AccessDenied as exc:
        response = refused(runtime, exc).response(instance=path)
    except _TooLarge:
        response = problem(413, "the request body is too large", instance=path)
    await response(scope, receive, send)


def topic_name(entry: ApiEntry, raw: str) -> str | None:
    """``hub.topic`` as a topic name: a name (``/t/eu``) or a topic URL of this API."""
    if raw.startswith(("http://", "https://")):
        path = urlsplit(raw).path
        base = entry.api.base_path
        return path[len(base) :] if path.startswith(base + "/") else None
    return raw if raw.startswith("/") else "/" + raw


async def _hub(
    runtime: Runtime, scope: Scope, receive: Receive, headers: dict[str, str], entry: ApiEntry
) -> Response:
    path = scope["path"]
    query = query_params(scope)
    grant = await authenticate(runtime, headers, query)
    content_type = headers.get("content-type", FORM).partition(";")[0].strip().lower()
    body = await read_body(receive, HUB_BODY_LIMIT)
    if body and content_type != FORM:
        return problem(415, f"the hub takes {FORM}", instance=path)
    pairs = parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True) + query
    try:
        request = parse_hub_request(pairs)
    except HubRequestError as exc:
        return answer(exc).response(instance=path)
    name = topic_name(entry, request.topic)
    if name is None:
        return problem(400, "hub.topic is not a topic URL of this API", instance=path)
    token_query = [(k, v) for k, v in query if k == "access_token"]  # not hub.* or topic=
    admitted = await admit(
        runtime,
        path=entry.api.base_path + name,
        headers=headers,
        query=token_query,
        protocol="websub",
    )
    match = admitted.topics[0]
    if match.topic.mode == "publish":
        return problem(400, f"topic {match.name} is publish-only", instance=path)
    service = runtime.websub
    assert service is not None
    try:
        await service.guard.target(request.callback)
    except CallbackRefused as exc:
        return answer(exc).response(instance=path)
    service.verify(Pending(request, match, grant.client_id))
    return empty(202)


def empty(status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(status_code=status, headers=headers)


def _links(runtime: Runtime, match: TopicMatch) -> dict[str, str]:
    assert runtime.websub is not None
    hub_url, topic_url = runtime.websub.urls(match)
    return {"Link": link_header(hub_url, topic_url)}


async def _discovery(
    runtime: Runtime, scope: Scope, headers: dict[str, str], entry: ApiEntry, rest: str
) -> Response:
    admitted = await admit(
        runtime, path=scope["path"], headers=headers, query=query_params(scope), protocol="websub"
    )
    return empty(200, _links(runtime, admitted.topics[0]))


async def _inbound(
    runtime: Runtime,
    scope: Scope,
    receive: Receive,
    headers: dict[str, str],
    entry: ApiEntry,
    rest: str,
) -> Response:
    """A third party's webhook into the topic's backend channel (issue 5 part 5)."""
    path = scope["path"]
    query = query_params(scope)
    signature = headers.get("x-hub-signature-256")
    match = entry.topic(rest)
    secret = match.topic.webhook_secret if match is not None else None
    limit = runtime.config.gateway.max_message_bytes
    if signature is not None and secret is not None and bearer_token(headers, query) is None:
        assert match is not None
        body = await read_body(receive, limit)
        if not verify_hub_signature(secret.get_secret_value(), body, signature):
            return problem(
                401,
                "X-Hub-Signature-256 does not match the body",
                instance=path,
                code="bad_signature",
            )
        if entry.api.state not in VISIBLE_STATES:
            raise UnknownResource("no such API or topic")
        if entry.api.state == "BLOCKED":
            raise ApiBlocked("the API is blocked")
    else:
        admitted = await admit(runtime, path=path, headers=headers, query=query, protocol="websub")
        match = admitted.topics[0]
        body = await read_body(receive, limit)
    if match.topic.mode != "publish":
        return problem(405, f"topic {match.name} is subscribe-only", instance=path)
    content_type = headers.get("content-type", "application/octet-stream")
    event = Event(match.channel, decode_payload(body), headers={"content-type": content_type})
    try:
        await runtime.source(entry.api).publish(match.channel, event)
    except ConnectorError as exc:  # the broker did not take it: the sender must hear of it
        log.warning(
            "inbound webhook not published", extra={"channel": match.channel, "error": str(exc)}
        )
        return problem(502, "the broker did not take the event", instance=path)
    runtime.metrics.events_published.labels(
        entry.api.name, entry.api.version, match.topic.name
    ).inc()
    return empty(202)
