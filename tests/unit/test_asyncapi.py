"""AsyncAPI export and import (CONTRACT §8): shape, 2.x/3.x mapping, round trip, errors."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.asyncapi import AsyncApiError, export_document, import_document, to_yaml
from bridge.config import Api
from bridge.errors import BridgeError

PUBLIC_URL = "https://gw.example.com:8443"


def make_api(protocol: str = "websocket", **changes: Any) -> Api:
    spec: dict[str, Any] = {
        "name": "Orders",
        "version": "1.0.0",
        "context": "/{version}/orders",
        "protocol": protocol,
        "broker": "kafka-main",
        "description": "Order events",
        "topics": [
            {"name": "/created", "channel": "orders.created", "scopes": ["orders:read"]},
            {
                "name": "/by-region/{region}",
                "channel": "orders.{region}",
                "scopes": ["orders:read", "orders:region"],
                "description": "orders of one region",
            },
            {"name": "/shops/{shop}/items/{item}", "channel": "shops.{shop}.{item}"},
        ],
    }
    if protocol == "websocket":
        spec["topics"] += [
            {"name": "/commands", "mode": "publish", "channel": "orders.in", "scopes": ["w"]},
            {"name": "/chat", "mode": "both", "channel": "chat", "content_type": "text/plain"},
        ]
    return Api.model_validate({**spec, **changes})


def essentials(api: Api) -> list[tuple[Any, ...]]:
    return [(t.name, t.mode, t.scopes, t.channel, t.content_type) for t in api.topics]


# --- export ---------------------------------------------------------------------------------


def test_export_describes_the_gateway_as_server() -> None:
    doc = export_document(make_api(), public_url=PUBLIC_URL)
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["title"] == "Orders"
    assert doc["info"]["version"] == "1.0.0"
    assert doc["info"]["description"] == "Order events"
    (server,) = doc["servers"].values()
    assert server["host"] == "gw.example.com:8443"
    assert server["protocol"] == "wss"
    assert "pathname" not in server
    assert server["security"] == [{"$ref": "#/components/securitySchemes/oauth2"}]


@pytest.mark.parametrize(
    ("protocol", "public_url", "expected"),
    [
        ("sse", "http://127.0.0.1:8080", "http"),
        ("websub", "https://gw.example.com", "https"),
        ("websocket", "http://127.0.0.1:8080", "ws"),
    ],
)
def test_server_protocol_follows_api_protocol(
    protocol: str, public_url: str, expected: str
) -> None:
    doc = export_document(make_api(protocol), public_url=public_url)
    assert doc["servers"]["gateway"]["protocol"] == expected


def test_public_url_path_becomes_server_pathname() -> None:
    doc = export_document(make_api("sse"), public_url="https://example.com/gw/")
    assert doc["servers"]["gateway"]["pathname"] == "/gw"
    assert doc["servers"]["gateway"]["host"] == "example.com"


def test_one_channel_per_topic_addressed_by_topic_url_path() -> None:
    doc = export_document(make_api(), public_url=PUBLIC_URL)
    channels = doc["channels"]
    assert [c["address"] for c in channels.values()] == [
        "/1.0.0/orders/created",
        "/1.0.0/orders/by-region/{region}",
        "/1.0.0/orders/shops/{shop}/items/{item}",
        "/1.0.0/orders/commands",
        "/1.0.0/orders/chat",
    ]
    for key in channels:
        assert key.replace("-", "").replace(".", "").replace("_", "").isalnum()
    region = channels["by-region.region"]
    assert set(region["parameters"]) == {"region"}
    assert region["x-streambridge-channel"] == "orders.{region}"
    assert region["description"] == "orders of one region"
    assert set(channels["shops.shop.items.item"]["parameters"]) == {"shop", "item"}
    assert "parameters" not in channels["created"]
    assert channels["chat"]["messages"]["event"]["contentType"] == "text/plain"


def test_context_without_version_puts_version_last() -> None:
    doc = export_document(make_api("sse", context="/orders"), public_url=PUBLIC_URL)
    assert doc["channels"]["created"]["address"] == "/orders/1.0.0/created"


def test_operations_send_for_subscribe_receive_for_publish_both_for_both() -> None:
    doc = export_document(make_api(), public_url=PUBLIC_URL)
    actions: dict[str, set[str]] = {}
    for operation in doc["operations"].values():
        key = operation["channel"]["$ref"].removeprefix("#/channels/")
        assert key in doc["channels"]
        assert operation["messages"] == [{"$ref": f"#/channels/{key}/messages/event"}]
        actions.setdefault(key, set()).add(operation["action"])
    assert actions == {
        "created": {"send"},
        "by-region.region": {"send"},
        "shops.shop.items.item": {"send"},
        "commands": {"receive"},
        "chat": {"send", "receive"},
    }


def test_operations_carry_the_topics_scopes_in_an_oauth2_client_credentials_scheme() -> None:
    doc = export_document(make_api(), public_url=PUBLIC_URL)
    scopes = {
        key: operation["security"][0]["scopes"] for key, operation in doc["operations"].items()
    }
    assert scopes["created.send"] == ["orders:read"]
    assert scopes["by-region.region.send"] == ["orders:read", "orders:region"]
    assert scopes["shops.shop.items.item.send"] == []
    assert scopes["commands.receive"] == ["w"]
    scheme = doc["components"]["securitySchemes"]["oauth2"]
    assert scheme["type"] == "oauth2"
    flow = scheme["flows"]["clientCredentials"]
    assert flow["tokenUrl"] == f"{PUBLIC_URL}/oauth2/token"
    assert set(flow["availableScopes"]) == {"orders:read", "orders:region", "w"}
    assert "/by-region/{region}" in flow["availableScopes"]["orders:region"]


def test_colliding_channel_keys_are_made_distinct() -> None:
    api = make_api(
        "sse",
        topics=[
            {"name": "/a/b", "channel": "x"},
            {"name": "/a.b", "channel": "y"},
            {"name": "/a~b", "channel": "z"},
        ],
    )
    keys = list(export_document(api, public_url=PUBLIC_URL)["channels"])
    assert len(set(keys)) == 3
    assert keys[:2] == ["a.b", "a.b_2"]


def test_to_yaml_keeps_version_strings_strings() -> None:
    api = make_api("sse", version="1.10")
    text = to_yaml(export_document(api, public_url=PUBLIC_URL))
    assert "version: '1.10'" in text
    assert import_document(text, broker="b").version == "1.10"


# --- round trip -----------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["sse", "websocket", "websub"])
@pytest.mark.parametrize("form", ["json", "yaml"])
def test_import_of_an_export_gives_back_the_same_topics(protocol: str, form: str) -> None:
    api = make_api(protocol)
    doc = export_document(api, public_url=PUBLIC_URL)
    text = json.dumps(doc) if form == "json" else to_yaml(doc)
    back = import_document(text, broker="other-broker")
    assert essentials(back) == essentials(api)
    assert [t.description for t in back.topics] == [t.description for t in api.topics]
    assert (back.name, back.version, back.context, back.protocol) == (
        api.name,
        api.version,
        api.context,
        api.protocol,
    )
    assert back.broker == "other-broker"
    assert back.state == "CREATED"


def test_round_trip_with_an_overriding_context_and_name() -> None:
    api = make_api()
    text = json.dumps(export_document(api, public_url=PUBLIC_URL))
    back = import_document(text, broker="b", name="Renamed", context="/v2/x")
    assert (back.name, back.context) == ("Renamed", "/v2/x")
    assert [t.name for t in back.topics] == [t.name for t in api.topics]


# --- import of hand-written documents -------------------------------------------------------

V3_YAML = """\
asyncapi: 3.0.0
info:
  title: Light Measured
  version: 2.1.0
  description: street lights
defaultContentType: application/json
servers:
  production:
    host: broker.example.com
    protocol: mqtt
channels:
  lightingMeasured:
    address: smartylighting/streetlights/{streetlightId}/lighting/measured
    parameters:
      streetlightId: {description: the id}
    messages:
      measured: {$ref: '#/components/messages/measured'}
  turnOn:
    address: smartylighting/streetlights/{streetlightId}/turn-on
    parameters:
      streetlightId: {}
  dim:
    $ref: '#/components/channels/dim'
  idle:
    address: status
operations:
  sendMeasured:
    action: send
    channel: {$ref: '#/channels/lightingMeasured'}
    security:
      - $ref: '#/components/securitySchemes/oauth'
  receiveTurnOn:
    action: receive
    channel: {$ref: '#/channels/turnOn'}
    security:
      - type: oauth2
        flows: {clientCredentials: {tokenUrl: 'https://x/token', availableScopes: {}}}
        scopes: [lights:write]
  sendDim:
    action: send
    channel: {$ref: '#/channels/dim'}
  receiveDim:
    action: receive
    channel: {$ref: '#/channels/dim'}
components:
  channels:
    dim:
      address: smartylighting.{streetlightId}.dim
  messages:
    measured:
      contentType: application/cbor
      payload: {type: object}
  securitySchemes:
    oauth:
      type: oauth2
      flows:
        clientCredentials:
          tokenUrl: https://x/token
          availableScopes: {lights:read: read, lights:write: switch}
      scopes: [lights:read]
"""


def test_import_3x_yaml() -> None:
    api = import_document(V3_YAML, broker="mqtt-main")
    assert (api.name, api.version, api.description) == ("Light Measured", "2.1.0", "street lights")
    assert api.context == "/light-measured"
    assert api.protocol == "websocket"  # there are publish topics
    assert api.state == "CREATED"
    assert essentials(api) == [
        (
            "/smartylighting/streetlights/{streetlightId}/lighting/measured",
            "subscribe",
            ["lights:read"],
            "smartylighting/streetlights/{streetlightId}/lighting/measured",
            "application/cbor",
        ),
        (
            "/smartylighting/streetlights/{streetlightId}/turn-on",
            "publish",
            ["lights:write"],
            "smartylighting/streetlights/{streetlightId}/turn-on",
            "application/json",
        ),
        (
            "/smartylighting/{streetlightId}/dim",
            "both",
            [],
            "smartylighting.{streetlightId}.dim",
            "application/json",
        ),
        ("/status", "subscribe", [], "status", "application/json"),
    ]


TICKER = json.dumps(
    {
        "asyncapi": "3.0.0",
        "info": {"title": "Ticker", "version": "1"},
        "channels": {"prices": {"address": "/prices/{symbol}"}},
        "operations": {
            "s": {
                "action": "send",
                "channel": {"$ref": "#/channels/prices"},
                "security": [{"oauth": ["prices:read"]}],
            }
        },
    }
)


def test_import_3x_json_with_only_send_operations_defaults_to_sse() -> None:
    api = import_document(TICKER.encode(), broker="demo")
    assert api.protocol == "sse"
    assert essentials(api) == [
        ("/prices/{symbol}", "subscribe", ["prices:read"], "prices/{symbol}", "application/json")
    ]


def test_import_arguments_override_the_document() -> None:
    api = import_document(V3_YAML, broker="m", name="Lights", context="/{version}/lights")
    assert (api.name, api.context, api.base_path) == (
        "Lights",
        "/{version}/lights",
        "/2.1.0/lights",
    )
    assert import_document(TICKER, broker="m", protocol="websub").protocol == "websub"


V2_YAML = """\
asyncapi: 2.6.0
info:
  title: Orders Service
  version: '1.0'
servers:
  prod:
    url: broker.example.com
    protocol: kafka
    security:
      - oauth: [orders:any]
channels:
  orders/{region}:
    description: orders per region
    parameters:
      region:
        schema: {type: string}
    subscribe:
      security:
        - oauth: [orders:read]
      message:
        contentType: application/avro
        payload: {type: object}
    publish:
      security:
        - oauth: [orders:write]
      message:
        oneOf:
          - contentType: application/json
          - contentType: text/plain
  orders/created:
    subscribe:
      message: {$ref: '#/components/messages/created'}
  orders/commands:
    publish: {}
components:
  messages:
    created: {contentType: text/plain}
  securitySchemes:
    oauth:
      type: oauth2
      flows:
        clientCredentials:
          tokenUrl: https://x/token
          scopes:
            orders:any: any order
            orders:read: read orders
            orders:write: place orders
"""


def test_import_2x_yaml_with_publish_subscribe_and_parameters() -> None:
    api = import_document(V2_YAML, broker="kafka-main")
    assert (api.name, api.version, api.context, api.protocol) == (
        "Orders Service",
        "1.0",
        "/orders-service",
        "websocket",
    )
    assert essentials(api) == [
        (
            "/orders/{region}",
            "both",
            ["orders:read", "orders:write"],
            "orders/{region}",
            "application/avro",
        ),
        ("/orders/created", "subscribe", ["orders:any"], "orders/created", "text/plain"),
        ("/orders/commands", "publish", ["orders:any"], "orders/commands", "application/json"),
    ]
    assert api.topics[0].description == "orders per region"


def test_import_2x_json() -> None:
    doc = {
        "asyncapi": "2.0.0",
        "info": {"title": "Users", "version": "1.0.0"},
        "channels": {"user/signedup": {"subscribe": {"message": {"payload": {}}}}},
    }
    api = import_document(json.dumps(doc), broker="b")
    assert essentials(api) == [
        ("/user/signedup", "subscribe", [], "user/signedup", "application/json")
    ]
    assert api.protocol == "sse"


@pytest.mark.parametrize(
    ("address", "name", "channel"),
    [
        (
            "smartylighting.streetlights.1.0.event.{streetlightId}.lighting.measured",
            "/smartylighting.streetlights.1.0.event/{streetlightId}/lighting.measured",
            "smartylighting.streetlights.1.0.event.{streetlightId}.lighting.measured",
        ),
        ("sensors/+/temp", "/sensors/_/temp", "sensors/+/temp"),
        ("/a//b/", "/a/b", "a//b/"),
        ("rooms/{room-id}", "/rooms/{room_id}", "rooms/{room_id}"),
        ("v/{1st}", "/v/{_1st}", "v/{_1st}"),
    ],
)
def test_addresses_that_are_no_url_path_are_mapped_to_one(
    address: str, name: str, channel: str
) -> None:
    doc = {
        "asyncapi": "3.0.0",
        "info": {"title": "T", "version": "1"},
        "channels": {"c": {"address": address}},
    }
    (topic,) = import_document(json.dumps(doc), broker="b").topics
    assert (topic.name, topic.channel) == (name, channel)


# --- documents that do not parse or map -----------------------------------------------------


def import_error(text: str | bytes, **kwargs: Any) -> str:
    with pytest.raises(AsyncApiError) as caught:
        import_document(text, broker="b", **kwargs)
    assert isinstance(caught.value, BridgeError)
    return str(caught.value)


def v3(channels: Any, **top: Any) -> str:
    doc = {"asyncapi": "3.0.0", "info": {"title": "T", "version": "1"}, "channels": channels}
    return json.dumps({**doc, **top})


def test_malformed_yaml_names_line_and_column() -> None:
    message = import_error("asyncapi: 3.0.0\ninfo:\n  title: [unclosed\n  version: 1\n")
    assert "not valid YAML" in message
    assert "line " in message
    assert "column " in message


def test_malformed_json_names_line_and_column() -> None:
    message = import_error('{\n  "asyncapi": "3.0.0",\n  "info": {,}\n}')
    assert message.startswith("not valid JSON: line 3, column")


def test_not_a_mapping_and_not_utf8() -> None:
    assert "mapping at the top level" in import_error("- a\n- b\n")
    assert "UTF-8" in import_error(b"\xff\xfe\x00asyncapi")


def test_missing_asyncapi_field() -> None:
    message = import_error("info: {title: T, version: '1'}\nchannels: {a: {}}\n")
    assert message.startswith("asyncapi: required")


@pytest.mark.parametrize("version", ["1.2.0", "4.0.0", "3.0", "banana"])
def test_unsupported_version(version: str) -> None:
    message = import_error(f"asyncapi: {version}\ninfo: {{title: T, version: '1'}}\n")
    assert message == f"asyncapi: unsupported version {version} (2.x and 3.x are)"


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("orders/{region", "unbalanced { }"),
        ("orders/{re gion}", "invalid parameter name {re gion}"),
        ("{a}/{a}", "parameter {a} appears twice"),
        ("/", "names no path a topic could have"),
        ("orders?x=1", "no query part"),
    ],
)
def test_channel_with_invalid_address(address: str, reason: str) -> None:
    message = import_error(v3({"orders": {"address": address}}))
    assert message.startswith("channels.orders.address: ")
    assert reason in message


def test_non_string_address() -> None:
    message = import_error(v3({"orders": {"address": ["x"]}}))
    assert message == "channels.orders.address: required, a non-empty string"


def test_no_channels() -> None:
    assert import_error(v3({})).startswith("channels: no channels")


def test_missing_title_and_bad_version() -> None:
    doc = json.loads(v3({"a": {"address": "a"}}))
    del doc["info"]["title"]
    assert import_error(json.dumps(doc)).startswith("info.title: required")
    doc["info"].update(title="T", version="1 beta")
    assert import_error(json.dumps(doc)).startswith("info.version: ")


def test_invalid_scope_names_the_channel() -> None:
    text = v3(
        {"a": {"address": "a"}},
        operations={
            "o": {
                "action": "send",
                "channel": {"$ref": "#/channels/a"},
                "security": [{"s": ["a b"]}],
            }
        },
    )
    message = import_error(text)
    assert message.startswith("channels.a.security: ")
    assert "invalid scope 'a b'" in message


def test_operation_errors() -> None:
    bad_action = {"o": {"action": "subscribe", "channel": {"$ref": "#/channels/a"}}}
    assert import_error(v3({"a": {}}, operations=bad_action)).startswith(
        "operations.o.action: must be send or receive"
    )
    dangling = {"o": {"action": "send", "channel": {"$ref": "#/channels/b"}}}
    assert "#/channels/b points at nothing" in import_error(v3({"a": {}}, operations=dangling))
    external = {"o": {"action": "send", "channel": {"$ref": "other.yaml#/channels/a"}}}
    assert "only references inside the document" in import_error(v3({"a": {}}, operations=external))


def test_publish_topics_need_a_protocol_that_receives() -> None:
    text = v3(
        {"in": {"address": "in"}},
        operations={"r": {"action": "receive", "channel": {"$ref": "#/channels/in"}}},
    )
    message = import_error(text, protocol="sse")
    assert message.startswith("channels.in: mode publish needs protocol websocket or websub")


def test_duplicate_topic_after_mapping() -> None:
    message = import_error(v3({"a": {"address": "x/y"}, "b": {"address": "/x/y"}}))
    assert message == "channels.b: duplicate topic /x/y"


def test_circular_reference() -> None:
    text = v3({"a": {"$ref": "#/channels/b"}, "b": {"$ref": "#/channels/a"}})
    assert "circular reference" in import_error(text)


# --- invariant: map or raise AsyncApiError, never anything else --------------------------------

_WORDS = [
    "asyncapi", "info", "title", "version", "channels", "operations", "address", "action",
    "channel", "$ref", "security", "scopes", "messages", "contentType", "subscribe", "publish",
    "servers", "type", "oauth2", "send", "receive", "3.0.0", "2.6.0", "#/channels/a", "a",
    "x-streambridge-channel", "x-streambridge-api", "context", "protocol", "oneOf", "message",
]  # fmt: skip
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.sampled_from(_WORDS), st.text(max_size=8)
)
_trees = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(_WORDS), inner, max_size=5),
    ),
    max_leaves=30,
)


def _mostly(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Well-formed three times in four, so that documents also get past the first check."""
    return st.one_of(good, good, good, _trees)


_channels = st.dictionaries(
    st.sampled_from(["a", "b/{id}", "c.{x}.d", "#"]),
    _mostly(
        st.fixed_dictionaries(
            {},
            optional={
                "address": _mostly(st.sampled_from(["/a", "a/{id}", "{x}", "/", "q?"])),
                "subscribe": _mostly(st.just({"message": {"contentType": "text/plain"}})),
                "publish": _mostly(st.just({"security": [{"s": ["w"]}]})),
                "messages": _mostly(st.just({"m": {"contentType": "text/plain"}})),
                "x-streambridge-channel": _mostly(st.sampled_from(["a", "a.{id}", "{y}"])),
            },
        )
    ),
    min_size=1,
    max_size=3,
)
_operations = st.dictionaries(
    st.sampled_from(["o", "p"]),
    _mostly(
        st.fixed_dictionaries(
            {
                "action": _mostly(st.sampled_from(["send", "receive"])),
                "channel": _mostly(st.sampled_from([{"$ref": f"#/channels/{k}"} for k in "ab#"])),
            },
            optional={"security": _mostly(st.sampled_from([[{"s": ["r"]}], [{"s": ["a b"]}]]))},
        )
    ),
    max_size=2,
)


@settings(max_examples=300, deadline=None)
@given(
    tree=st.fixed_dictionaries(
        {
            "asyncapi": st.sampled_from(["3.0.0", "2.6.0"]),
            "info": _mostly(
                st.fixed_dictionaries(
                    {
                        "title": st.sampled_from(["T", "", "Ü n"]),
                        "version": st.sampled_from(["1", "a b"]),
                    }
                )
            ),
            "channels": _channels,
        },
        optional={"operations": _mostly(_operations), "servers": _trees},
    )
)
def test_any_document_maps_or_raises_asyncapi_error(tree: dict[str, Any]) -> None:
    try:
        api = import_document(json.dumps(tree), broker="b")
    except AsyncApiError:
        return
    assert api.state == "CREATED"


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=60))
def test_any_text_parses_or_raises_asyncapi_error(text: str) -> None:
    try:
        import_document(text, broker="b")
    except AsyncApiError:
        return
