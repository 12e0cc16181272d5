"""WebSub configuration: lease bounds, inbound webhook secrets (validated, masked in every
dump but the state store's, never in a repr), topic rules of websub APIs."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.config import parse_config, stored_document
from bridge.errors import ConfigError

SECRET = "inbound-secret-0123456789"


def config(topic: dict[str, Any], protocol: str = "websub", **websub: Any) -> dict[str, Any]:
    return {
        "websub": websub,
        "brokers": {"m": {"type": "memory"}},
        "apis": [
            {
                "name": "A",
                "version": "1",
                "context": "/a",
                "protocol": protocol,
                "broker": "m",
                "topics": [topic],
            }
        ],
    }


def problems(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    return [str(p) for p in caught.value.problems]


def test_a_webhook_secret_is_masked_everywhere_but_in_the_store() -> None:
    parsed = parse_config(
        config({"name": "/in", "mode": "publish", "channel": "c", "webhook_secret": SECRET})
    )
    api = parsed.apis[0]
    assert SECRET not in repr(parsed) and SECRET not in str(api)
    assert SECRET not in api.model_dump_json()
    assert api.model_dump(mode="json")["topics"][0]["webhook_secret"] == "**********"
    document = stored_document(api)
    assert document["topics"][0]["webhook_secret"] == SECRET
    assert type(api).model_validate(document) == api  # the store's copy reads back


def test_webhook_secret_rules() -> None:
    short = config({"name": "/in", "mode": "publish", "channel": "c", "webhook_secret": "x"})
    assert problems(short) == ["apis[0].topics[0].webhook_secret: must be at least 16 characters"]
    masked = config({"name": "/in", "mode": "publish", "channel": "c", "webhook_secret": "*" * 16})
    assert "masked" in problems(masked)[0]
    for topic, protocol in (
        ({"name": "/t", "channel": "c", "webhook_secret": SECRET}, "websub"),
        ({"name": "/in", "mode": "publish", "channel": "c", "webhook_secret": SECRET}, "websocket"),
    ):
        found = problems(config(topic, protocol))
        assert found == [
            "apis[0].topics[0].webhook_secret: "
            "only a publish topic of a websub API takes inbound webhooks"
        ]


def test_a_websub_topic_cannot_be_named_hub() -> None:
    found = problems(config({"name": "/hub", "channel": "c"}))
    assert found == ["apis[0].topics[0].name: /hub is the hub of a websub API"]


def test_lease_bounds() -> None:
    parsed = parse_config(config({"name": "/t", "channel": "c"}, min_lease_seconds=1))
    assert parsed.websub.min_lease_seconds == 1
    assert parsed.websub.max_lease_seconds == 2_592_000
    assert parsed.websub.timeout == 10.0
    found = problems(config({"name": "/t", "channel": "c"}, max_lease_seconds=10))
    assert "min_lease_seconds <= default_lease_seconds <= max_lease_seconds" in found[0]
