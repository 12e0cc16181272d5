"""Reading an AsyncAPI 2.x or 3.x document: YAML or JSON text to its channels."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote

import yaml

from bridge.errors import AsyncApiError

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
