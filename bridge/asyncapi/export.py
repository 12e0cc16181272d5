"""An API as an AsyncAPI 3.0.0 document (CONTRACT §8)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import yaml

from bridge.asyncapi.common import _KEY_JUNK, _PLACEHOLDER, MESSAGE, SCHEME
from bridge.config import Api, Tier, Topic, describe

# --- export ------------------------------------------------------------------------------

# The gateway sends what clients subscribe to and receives what they publish.
_ACTIONS = {"subscribe": ("send",), "publish": ("receive",), "both": ("send", "receive")}


# CONTRACT §6: what a ``streambridge.v1`` client sends and receives instead of the payload.
V1_ENVELOPE = {
    "subprotocol": "streambridge.v1",
    "description": (
        "With Sec-WebSocket-Protocol: streambridge.v1 every frame is a JSON object: events "
        "{id, event, data, key, headers}; signals {event: gap|throttled|revoked|lag, data}; "
        "publishes {ref, data, key, headers} answered {event: ack|nack, ref}. "
        "The payload above is the envelope's data."
    ),
    "payload": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "event": {"type": "string"},
            "data": {},
            "key": {"type": ["string", "null"]},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "ref": {"type": "string"},
        },
    },
}


def export_document(
    api: Api, *, public_url: str, tiers: Mapping[str, Tier] | None = None
) -> dict[str, Any]:
    """AsyncAPI 3.0.0 for one API, served by the gateway at ``public_url``; ``tiers``
    (the known ones) add the delivery policy of each tier the API offers (CONTRACT §10)."""
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
    if api.endpoint is not None:  # the server the API fronts (CONTRACT §13)
        info["x-streambridge-endpoint"] = api.endpoint.model_dump(mode="json", exclude_none=True)
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
    document: dict[str, Any] = {
        "asyncapi": "3.0.0",
        "info": info,
        "defaultContentType": "application/json",
        "servers": {"gateway": server},
        "channels": channels,
        "operations": operations,
        "components": {"securitySchemes": {SCHEME: scheme}},
    }
    if tiers:
        offered = api.tiers or list(tiers)
        document["x-streambridge-delivery"] = {
            name: describe(tiers[name].delivery) for name in offered if name in tiers
        }
    return document


def _channel(api: Api, topic: Topic) -> dict[str, Any]:
    channel: dict[str, Any] = {"address": api.base_path + topic.name}
    if topic.description:
        channel["description"] = topic.description
    message: dict[str, Any] = {"name": MESSAGE, "contentType": topic.content_type, "payload": {}}
    if api.protocol == "websocket":
        message["x-streambridge-envelope"] = V1_ENVELOPE
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
