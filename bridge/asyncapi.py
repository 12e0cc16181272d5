"""An API as an AsyncAPI document and back (CONTRACT §8, AsyncAPI 3.0.0 and 2.x).

Export describes the *gateway* as the application (AsyncAPI 3.0 §Operation Object): a
subscribe topic is an operation where the gateway ``send``s to clients, a publish topic
one where it ``receive``s from them. Addresses are full topic URL paths (CONTRACT §3)
under the server, so the server's ``pathname`` is only the path of ``public_url``.

Import maps any 2.x or 3.x document (YAML or JSON) onto a CREATED API; every reason it
cannot names where in the document, e.g. ``channels.orders.address: ...``.
Everything here is pure: text in, dicts and models out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml
from pydantic import ValidationError

from bridge.config import Api, Config, MemoryBroker, Topic, semantic_problems
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


# --- export ------------------------------------------------------------------------------

# The gateway sends what clients subscribe to and receives what they publish.
_ACTIONS = {"subscribe": ("send",), "publish": ("receive",), "both": ("send", "receive")}


def export_document(api: Api, *, public_url: str) -> dict[str, Any]:
    """AsyncAPI 3.0.0 for one API, served by the gateway at ``public_url``."""
    url = urlsplit(public_url.rstrip("/"))
    protocol = url.scheme
    if api.protocol == "websocket":
        protocol = "wss" if url.scheme == "https" else "ws"
    keys = channel_keys(t.name for t in api.topics)
    needed_by: dict[str, list[str]] = {}
    for topic in api.topics:
        for scope in topic.scopes:
            needed_by.setdefault(scope, []).append(topic.name)
    flows = {
        "clientCredentials": {
            "tokenUrl": f"{public_url.rstrip('/')}/oauth2/token",
            "availableScopes": {s: f"needed by {', '.join(n)}" for s, n in needed_by.items()},
        }
    }
    scheme = {
        "type": "oauth2",
        "description": "client credentials; a token needs the scopes of every topic it uses",
        "flows": flows,
    }
    server: dict[str, Any] = {
        "host": url.netloc,
        "protocol": protocol,
        "description": f"Streambridge gateway ({api.protocol})",
        "security": [{"$ref": f"#/components/securitySchemes/{SCHEME}"}],
    }
    if url.path:
        server["pathname"] = url.path
    info: dict[str, Any] = {"title": api.name, "version": api.version}
    if api.description:
        info["description"] = api.description
    info["x-streambridge-api"] = {"context": api.context, "protocol": api.protocol}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for key, topic in zip(keys, api.topics, strict=True):
        channels[key] = _channel(api, topic)
        for action in _ACTIONS[topic.mode]:
            operations[f"{key}.{action}"] = {
                "action": action,
                "channel": {"$ref": f"#/channels/{key}"},
                "messages": [{"$ref": f"#/channels/{key}/messages/{MESSAGE}"}],
                "security": [{**scheme, "scopes": list(topic.scopes)}],
            }
    return {
        "asyncapi": "3.0.0",
        "info": info,
        "defaultContentType": "application/json",
        "servers": {"gateway": server},
        "channels": channels,
        "operations": operations,
        "components": {"securitySchemes": {SCHEME: scheme}},
    }


def _channel(api: Api, topic: Topic) -> dict[str, Any]:
    channel: dict[str, Any] = {"address": api.base_path + topic.name}
    if topic.description:
        channel["description"] = topic.description
    message = {"name": MESSAGE, "contentType": topic.content_type, "payload": {}}
    channel["messages"] = {MESSAGE: message}
    parameters = _PLACEHOLDER.findall(topic.name)
    if parameters:
        channel["parameters"] = {
            p: {"description": "one path segment of letters, digits, _ ~ -"} for p in parameters
        }
    channel["x-streambridge-channel"] = topic.channel
    return channel


def channel_keys(names: Iterable[str]) -> list[str]:
    """Distinct channel keys (``^[A-Za-z0-9_.-]+$``) for topic names, in order."""
    keys: list[str] = []
    for name in names:
        base = ".".join(_KEY_JUNK.sub("-", s).strip("-") or "_" for s in name.split("/")[1:])
        key, n = base, 2
        while key in keys:
            key, n = f"{base}_{n}", n + 1
        keys.append(key)
    return keys


def to_yaml(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)


# --- import: reading the document ----------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """YAML whose scalars are strings unless null or true/false: ``version: 1.10`` stays
    ``"1.10"`` (YAML 1.1 would make it the float 1.1) and a key ``on`` stays ``"on"``."""


_Loader.yaml_implicit_resolvers = {}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)
_Loader.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"^(?:<<)$"), ["<"])


def parse_text(text: str | bytes) -> dict[str, Any]:
    """The document as a mapping; JSON is tried first when it looks like JSON."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise AsyncApiError("", f"not UTF-8 text (byte {exc.start})") from exc
    json_error: json.JSONDecodeError | None = None
    if text.lstrip().startswith("{"):
        try:
            parsed: Any = json.loads(text, parse_int=str, parse_float=str)
        except json.JSONDecodeError as exc:
            json_error = exc
        else:
            return _mapping(parsed)
    try:
        parsed = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader, fewer types
    except yaml.YAMLError as exc:
        if json_error is not None:
            raise AsyncApiError(
                "",
                f"not valid JSON: line {json_error.lineno}, column {json_error.colno}: "
                f"{json_error.msg}",
            ) from exc
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        reason = getattr(exc, "problem", None) or str(exc)
        raise AsyncApiError("", f"not valid YAML or JSON: {at}{reason}") from exc
    return _mapping(parsed)


def _mapping(parsed: Any) -> dict[str, Any]:
    if not isinstance(parsed, dict):
        raise AsyncApiError("", "an AsyncAPI document is a mapping at the top level")
    return {str(k): v for k, v in parsed.items()}


class _Document:
    """A parsed document with internal ``$ref`` resolution (JSON Pointer, RFC 6901)."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw

    def resolve(self, node: Any, where: str) -> Any:
        seen: set[str] = set()
        while isinstance(node, dict) and "$ref" in node:
            ref = node["$ref"]
            if not isinstance(ref, str) or not ref.startswith("#"):
                raise AsyncApiError(
                    where, f"only references inside the document are supported, not {ref!r}"
                )
            if ref in seen:
                raise AsyncApiError(where, f"circular reference {ref}")
            seen.add(ref)
            node = self.raw
            for part in filter(None, ref[1:].split("/")):
                token = unquote(part).replace("~1", "/").replace("~0", "~")
                if isinstance(node, dict) and token in node:
                    node = node[token]
                elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
                    node = node[int(token)]
                else:
                    raise AsyncApiError(where, f"{ref} points at nothing")
        return node

    def mapping(self, node: Any, where: str) -> dict[str, Any]:
        node = self.resolve(node, where)
        if node is None:
            return {}
        if not isinstance(node, dict):
            raise AsyncApiError(where, "must be a mapping")
        return {str(k): v for k, v in node.items()}

    def items(self, node: Any, where: str) -> list[Any]:
        node = self.resolve(node, where)
        if node is None:
            return []
        if not isinstance(node, list):
            raise AsyncApiError(where, "must be a list")
        return [self.resolve(item, where) for item in node]


def _string(node: Any, where: str) -> str:
    if not isinstance(node, str) or not node:
        raise AsyncApiError(where, "required, a non-empty string")
    return node


class _Found:
    """One channel as read from the document, before it becomes a Topic."""

    def __init__(self, where: str, address: str, channel: dict[str, Any]) -> None:
        self.where = where
        self.address = address
        self.channel = channel
        self.actions: set[str] = set()  # "subscribe" / "publish" in CONTRACT §8's sense
        self.scopes: list[str] = []
        self.content_type: str | None = None

    def add_scopes(self, scopes: Iterable[Any]) -> None:
        for scope in scopes:
            if str(scope) not in self.scopes:
                self.scopes.append(str(scope))

    def note_message(self, message: Any) -> None:
        content = message.get("contentType") if isinstance(message, dict) else None
        if self.content_type is None and isinstance(content, str):
            self.content_type = content


def _v3_channels(doc: _Document) -> list[_Found]:
    """3.x: channels by address; ``send`` makes subscribe, ``receive`` publish."""
    found: dict[int, _Found] = {}
    for key, node in doc.mapping(doc.raw.get("channels"), "channels").items():
        where = f"channels.{key}"
        identity = id(doc.resolve(node, where))  # what operations' $refs resolve to
        channel = doc.mapping(node, where)
        address = channel.get("address")
        if address is None:
            address = key  # AsyncAPI 3.0: a null address is unknown; the key names it best
        item = found[identity] = _Found(where, _string(address, f"{where}.address"), channel)
        for message in doc.mapping(channel.get("messages"), f"{where}.messages").values():
            item.note_message(doc.mapping(message, f"{where}.messages"))
    for key, node in doc.mapping(doc.raw.get("operations"), "operations").items():
        where = f"operations.{key}"
        operation = doc.mapping(node, where)
        action = operation.get("action")
        if action not in ("send", "receive"):
            raise AsyncApiError(f"{where}.action", f"must be send or receive, not {action!r}")
        target = found.get(id(doc.resolve(operation.get("channel"), f"{where}.channel")))
        if target is None:
            raise AsyncApiError(f"{where}.channel", "must reference one of #/channels")
        target.actions.add("subscribe" if action == "send" else "publish")
        for scheme in doc.items(operation.get("security"), f"{where}.security"):
            target.add_scopes(_scopes(scheme, f"{where}.security"))
    return list(found.values())


def _v2_channels(doc: _Document) -> list[_Found]:
    """2.x: the channel key is the address; ``subscribe``/``publish`` keep their names."""
    found: list[_Found] = []
    for key, node in doc.mapping(doc.raw.get("channels"), "channels").items():
        where = f"channels.{key}"
        item = _Found(where, key, doc.mapping(node, where))
        for action in ("subscribe", "publish"):
            if item.channel.get(action) is None:
                continue
            at = f"{where}.{action}"
            operation = doc.mapping(item.channel[action], at)
            item.actions.add(action)
            for requirement in doc.items(operation.get("security"), f"{at}.security"):
                item.add_scopes(_scopes(requirement, f"{at}.security"))
            message = doc.mapping(operation.get("message"), f"{at}.message")
            alternatives = doc.items(message.get("oneOf"), f"{at}.message.oneOf")
            item.note_message(alternatives[0] if alternatives else message)
        found.append(item)
    return found


def _scopes(security: Any, where: str) -> list[str]:
    """Scopes of a 3.x security scheme (``scopes``) or a 2.x requirement ``{name: [...]}``."""
    if not isinstance(security, dict):
        raise AsyncApiError(where, "a security scheme or requirement is a mapping")
    if "type" not in security:  # 2.x requirement; also seen in 3.x documents in the wild
        return [str(s) for v in security.values() if isinstance(v, list) for s in v]
    scopes = security.get("scopes") or []
    if security["type"] not in ("oauth2", "openIdConnect") or not isinstance(scopes, list):
        return []
    return [str(s) for s in scopes]


def _server_scopes(doc: _Document) -> list[str]:
    """Scopes every server requires: they apply to channels whose operations name none."""
    scopes: list[str] = []
    for key, server in doc.mapping(doc.raw.get("servers"), "servers").items():
        at = f"servers.{key}.security"
        for security in doc.items(doc.mapping(server, f"servers.{key}").get("security"), at):
            scopes += _scopes(security, at)
    return scopes


# --- import: mapping onto an API ------------------------------------------------------------


def import_document(
    text: str | bytes,
    *,
    broker: str,
    protocol: str | None = None,
    name: str | None = None,
    context: str | None = None,
) -> Api:
    """A CREATED API from an AsyncAPI 2.x or 3.x document (CONTRACT §8)."""
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
    raw = {
        "name": title,
        "version": api_version,
        "context": context,
        "protocol": protocol,
        "broker": broker,
        "state": "CREATED",
        "topics": topics,
    }
    if isinstance(info.get("description"), str):
        raw["description"] = info["description"]
    return _validated(raw, found)


_WHERE = {
    "name": "info.title",
    "version": "info.version",
    "description": "info.description",
    "topics": "channels",
}


def _validated(raw: dict[str, Any], found: list[_Found]) -> Api:
    """The Api model and the config's cross-field rules, failing at a document path."""
    try:
        api = Api.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = error["loc"]
        at = _WHERE.get(str(loc[0]), str(loc[0]))
        if loc[0] == "topics" and len(loc) > 1 and isinstance(loc[1], int):
            field = str(loc[2]) if len(loc) > 2 else ""
            at = found[loc[1]].where + {"name": ".address", "scopes": ".security"}.get(field, "")
        raise AsyncApiError(at, error["msg"].removeprefix("Value error, ")) from exc
    config = Config(apis=[api], brokers={api.broker: MemoryBroker(type="memory")})
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
    if not isinstance(channel, str):
        channel = item.address.lstrip("/")
        for old, new in renames.items():
            channel = channel.replace(f"{{{old}}}", f"{{{new}}}")
    topic: dict[str, Any] = {"name": name, "mode": mode, "channel": channel, "scopes": item.scopes}
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


__all__ = ["AsyncApiError", "export_document", "import_document", "to_yaml"]
