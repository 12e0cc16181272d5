"""An AsyncAPI document mapped onto a CREATED API."""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from bridge.asyncapi.common import _PLACEHOLDER, _SEGMENT_JUNK, _VERSION
from bridge.asyncapi.document import (
    _Document,
    _Found,
    _server_scopes,
    _string,
    _v2_channels,
    _v3_channels,
    parse_text,
)
from bridge.config import (
    Api,
    Broker,
    Config,
    MemoryBroker,
    expression_context,
    semantic_problems,
)
from bridge.errors import AsyncApiError
from bridge.expressions import DEFAULT_LIMITS, CelLimits

# --- import: mapping onto an API ------------------------------------------------------------


def import_document(
    text: str | bytes,
    *,
    broker: str | None = None,
    endpoint: str | None = None,
    protocol: str | None = None,
    name: str | None = None,
    context: str | None = None,
    expressions: CelLimits = DEFAULT_LIMITS,
) -> Api:
    """A CREATED API from an AsyncAPI 2.x or 3.x document (CONTRACT §8), reading
    ``broker`` or fronting the server at ``endpoint`` (CONTRACT §13); its expressions
    are checked against ``expressions`` (``gateway.limits``)."""
    if (broker is None) == (endpoint is None):
        raise AsyncApiError("endpoint", "name a broker or an endpoint (one of the two)")
    doc = _Document(parse_text(text))
    version = doc.raw.get("asyncapi")
    if version is None:
        raise AsyncApiError("asyncapi", "required: the AsyncAPI version, e.g. 3.0.0 or 2.6.0")
    matched = _VERSION.match(str(version))
    if matched is None:
        raise AsyncApiError("asyncapi", f"unsupported version {version} (2.x and 3.x are)")
    found = _v3_channels(doc) if matched.group(1) == "3" else _v2_channels(doc)
    if not found:
        raise AsyncApiError("channels", "no channels, so no topics: an API needs at least one")
    fallback, default_type = _server_scopes(doc), doc.raw.get("defaultContentType")
    for item in found:
        if not item.scopes:
            item.add_scopes(fallback)
        item.note_message({"contentType": default_type})
    info = doc.mapping(doc.raw.get("info"), "info")
    extension = doc.mapping(info.get("x-streambridge-api"), "info.x-streambridge-api")
    title = name or _string(info.get("title"), "info.title")
    api_version = _string(info.get("version"), "info.version")
    exported_context = extension.get("context")
    context = context or (exported_context if isinstance(exported_context, str) else None)
    context = context or "/" + (re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "api")
    modes = [_mode(item) for item in found]
    if protocol is None:
        exported = extension.get("protocol")
        protocol = exported if isinstance(exported, str) else None
    if protocol is None:
        protocol = "sse" if all(m == "subscribe" for m in modes) else "websocket"
    bases = [
        Api.model_construct(context=c, version=api_version).base_path
        for c in (exported_context, context)
        if isinstance(c, str)
    ]
    topics = [_topic(item, mode, bases) for item, mode in zip(found, modes, strict=True)]
    raw: dict[str, Any] = {
        "name": title,
        "version": api_version,
        "context": context,
        "protocol": protocol,
        "state": "CREATED",
        "topics": topics,
    }
    if broker is not None:
        raw["broker"] = broker
        for topic in topics:
            topic.pop("exported", None)
    else:
        exported_endpoint = info.get("x-streambridge-endpoint")
        fronted = isinstance(exported_endpoint, dict)  # exported by an endpoint API
        settings = exported_endpoint if isinstance(exported_endpoint, dict) else {}
        raw["endpoint"] = {**settings, "production": endpoint}
        for topic in topics:
            # An endpoint API's exported channel is its url_mapping; a broker's channel
            # names no URL, so the topic name is the mapping (the default).
            mapping = topic.pop("channel")
            if topic.pop("exported", False) and fronted:
                topic["url_mapping"] = mapping
    if isinstance(info.get("description"), str):
        raw["description"] = info["description"]
    return _validated(raw, found, expressions)


_WHERE = {
    "name": "info.title",
    "version": "info.version",
    "description": "info.description",
    "topics": "channels",
}


def _validated(raw: dict[str, Any], found: list[_Found], expressions: CelLimits) -> Api:
    """The Api model and the config's cross-field rules, failing at a document path."""
    try:
        api = Api.model_validate(raw, context=expression_context(expressions))
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = error["loc"]
        at = _WHERE.get(str(loc[0]), str(loc[0]))
        if loc[0] == "topics" and len(loc) > 1 and isinstance(loc[1], int):
            field = str(loc[2]) if len(loc) > 2 else ""
            at = found[loc[1]].where + {"name": ".address", "scopes": ".security"}.get(field, "")
        raise AsyncApiError(at, error["msg"].removeprefix("Value error, ")) from exc
    brokers: dict[str, Broker] = {}
    if api.broker is not None:
        brokers[api.broker] = MemoryBroker(type="memory")
    config = Config(apis=[api], brokers=brokers)
    for problem in semantic_problems(config):
        path = problem.path.removeprefix("apis[0].")
        topic = re.match(r"topics\[(\d+)\]", path)
        raise AsyncApiError(found[int(topic.group(1))].where if topic else path, problem.message)
    return api


def _mode(item: _Found) -> str:
    if item.actions == {"subscribe", "publish"}:
        return "both"
    return "publish" if item.actions == {"publish"} else "subscribe"


def _topic(item: _Found, mode: str, bases: list[str]) -> dict[str, Any]:
    address = item.address
    for base in bases:
        if address.startswith(base + "/"):
            address = address[len(base) :]
            break
    name, renames = topic_name(address, f"{item.where}.address")
    channel = item.channel.get("x-streambridge-channel")
    exported = isinstance(channel, str)
    if not isinstance(channel, str):
        channel = item.address.lstrip("/")
        for old, new in renames.items():
            channel = channel.replace(f"{{{old}}}", f"{{{new}}}")
    topic: dict[str, Any] = {"name": name, "mode": mode, "channel": channel, "scopes": item.scopes}
    if exported:
        topic["exported"] = True  # read by an endpoint import: the url_mapping it had
    if item.content_type:
        topic["content_type"] = item.content_type
    if isinstance(item.channel.get("description"), str):
        topic["description"] = item.channel["description"]
    return topic


def topic_name(address: str, where: str) -> tuple[str, dict[str, str]]:
    """A Topic name for a channel address, and the parameters it had to rename.

    Segments mixing text and ``{parameters}`` (``event.{id}.lit``) are split at the
    parameters (``/event/{id}/lit``); characters a URL path segment cannot carry become
    ``_``. Queries, unbalanced braces and repeated parameters cannot be mapped.
    """
    if "?" in address:
        raise AsyncApiError(where, "an address has no query part (AsyncAPI 3.0 §Channel)")
    if "{" in _PLACEHOLDER.sub("", address) or "}" in _PLACEHOLDER.sub("", address):
        raise AsyncApiError(where, f"unbalanced {{ }} in {address!r}")
    renames: dict[str, str] = {}
    segments: list[str] = []
    for segment in address.split("/"):
        pieces = _PLACEHOLDER.split(segment)
        for i, piece in enumerate(pieces):
            if i % 2:
                if not re.fullmatch(r"[A-Za-z0-9_-]+", piece):
                    raise AsyncApiError(where, f"invalid parameter name {{{piece}}}")
                if piece in renames:
                    raise AsyncApiError(where, f"parameter {{{piece}}} appears twice")
                new = re.sub(r"^(?=\d)", "_", piece.replace("-", "_"))
                renames[piece] = new
                segments.append(f"{{{new}}}")
            else:
                literal = _SEGMENT_JUNK.sub("_", piece)
                literal = literal.strip("._~-") if len(pieces) > 1 else literal
                if literal:
                    segments.append(literal)
    if not any(re.search(r"[A-Za-z0-9{]", s) for s in segments):
        raise AsyncApiError(where, f"{address!r} names no path a topic could have")
    return "/" + "/".join(segments), {k: v for k, v in renames.items() if k != v}
