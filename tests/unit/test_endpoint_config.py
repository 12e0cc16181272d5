"""Endpoint APIs in the config (CONTRACT §13): ``endpoint`` instead of ``broker``,
``url_mapping``, and every bad value named by its field path."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bridge.asyncapi import export_document, import_document
from bridge.config import Api, parse_config
from bridge.errors import AsyncApiError, ConfigError

CONTRACT_EXAMPLE: dict[str, Any] = {
    "tiers": {"Gold": {}},
    "apis": [
        {
            "name": "Echo",
            "version": "1.0.0",
            "context": "/echo",
            "protocol": "websocket",
            "endpoint": {
                "production": "ws://127.0.0.1:9000",
                "sandbox": "ws://127.0.0.1:9001",
                "connect_timeout": "10s",
                "suspend": {"after_failures": 3, "for": "30s"},
            },
            "tiers": ["Gold"],
            "topics": [
                {"name": "/chat", "mode": "both", "url_mapping": "/echo", "scopes": ["echo:rw"]},
                {"name": "/rooms/{room}", "mode": "both", "url_mapping": "/rooms/{room}"},
            ],
        }
    ],
}


def echo(**changes: Any) -> dict[str, Any]:
    api = {**CONTRACT_EXAMPLE["apis"][0], **changes}
    return {**CONTRACT_EXAMPLE, "apis": [api]}


def paths(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    return [p.path for p in caught.value.problems]


def test_the_contract_example_validates_and_topics_read_their_url_mapping() -> None:
    config = parse_config(CONTRACT_EXAMPLE)
    api = config.apis[0]
    assert api.broker is None and api.endpoint is not None
    assert api.endpoint.suspend.after_failures == 3 and api.endpoint.suspend.for_ == 30.0
    assert api.endpoint.connect_timeout == 10.0
    assert [t.channel for t in api.topics] == ["/echo", "/rooms/{room}"]


def test_url_mapping_defaults_to_the_topic_name() -> None:
    topics = [{"name": "/feed/{id}"}]
    raw = echo(protocol="sse", endpoint={"production": "http://127.0.0.1:8081/sse"}, topics=topics)
    assert parse_config(raw).apis[0].topics[0].channel == "/feed/{id}"


def test_the_api_json_keeps_its_shape_through_a_dump() -> None:
    api = parse_config(CONTRACT_EXAMPLE).apis[0]
    dumped = api.model_dump(mode="json", exclude_none=True)
    assert dumped["endpoint"]["suspend"] == {"after_failures": 3, "for": "30s"}
    assert Api.model_validate(dumped) == api


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"endpoint": {"production": "http://127.0.0.1:9000"}}, "apis[0].endpoint.production"),
        ({"endpoint": {"production": "ws:///no-host"}}, "apis[0].endpoint.production"),
        ({"endpoint": {"production": "ftp://host/x"}}, "apis[0].endpoint.production"),
        (
            {"endpoint": {"production": "ws://h:1", "sandbox": "https://h:2"}},
            "apis[0].endpoint.sandbox",
        ),
        ({"endpoint": {"production": "ws://h:1", "connect_timeout": "0s"}}, ""),
        ({"broker": "mem"}, "apis[0].endpoint"),
        ({"endpoint": None}, "apis[0].broker"),
        ({"topics": [{"name": "/a", "url_mapping": "no-slash"}]}, "apis[0].topics[0].url_mapping"),
        ({"topics": [{"name": "/a", "url_mapping": "/x/{b}"}]}, "apis[0].topics[0]"),
    ],
)
def test_bad_endpoint_values_name_their_field(changes: dict[str, Any], where: str) -> None:
    raw = echo(**changes)
    raw["brokers"] = {"mem": {"type": "memory"}}
    found = paths(raw)
    assert any(p.startswith(where) for p in found), found


def test_an_endpoint_url_with_a_bad_scheme_is_named_with_the_protocol() -> None:
    raw = echo(protocol="sse", topics=[{"name": "/chat"}])  # ws:// endpoints on an SSE API
    assert paths(raw) == ["apis[0].endpoint.production", "apis[0].endpoint.sandbox"]


def test_a_broker_api_still_needs_a_channel_and_no_url_mapping() -> None:
    raw = {
        "brokers": {"mem": {"type": "memory"}},
        "apis": [
            {
                "name": "A",
                "version": "1",
                "context": "/a",
                "broker": "mem",
                "topics": [{"name": "/x"}, {"name": "/y", "channel": "y", "url_mapping": "/y"}],
            }
        ],
    }
    assert paths(raw) == ["apis[0].topics[0].channel", "apis[0].topics[1].url_mapping"]


def test_asyncapi_export_names_the_endpoint_and_import_takes_it_back() -> None:
    api = parse_config(CONTRACT_EXAMPLE).apis[0]
    document = export_document(api, public_url="http://127.0.0.1:8080")
    assert document["info"]["x-streambridge-endpoint"]["production"] == "ws://127.0.0.1:9000"
    imported = import_document(json.dumps(document), endpoint="ws://127.0.0.1:9100")
    assert imported.broker is None and imported.endpoint is not None
    assert imported.endpoint.production == "ws://127.0.0.1:9100"
    assert [(t.name, t.mode, t.channel, t.scopes) for t in imported.topics] == [
        (t.name, t.mode, t.channel, t.scopes) for t in api.topics
    ]


def test_asyncapi_import_takes_a_broker_or_an_endpoint() -> None:
    api = parse_config(CONTRACT_EXAMPLE).apis[0]
    text = json.dumps(export_document(api, public_url="http://127.0.0.1:8080"))
    with pytest.raises(AsyncApiError):
        import_document(text)
    with pytest.raises(AsyncApiError):
        import_document(text, broker="b", endpoint="ws://127.0.0.1:1")
    with pytest.raises(AsyncApiError) as caught:
        import_document(text, endpoint="http://127.0.0.1:1")  # a websocket API
    assert "ws://" in str(caught.value)
