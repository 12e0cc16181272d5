"""One slow CEL expression cannot stall the other streams (CONTRACT §4c, issue 12 R1): an
event too big for a comprehension within ``step_budget`` is skipped by that step,
counted and logged, and an unrelated stream meanwhile gets its events at once.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.e2e.helpers import (
    eventually,
    fetch_token,
    metric,
    metrics_text,
    payloads,
    publisher,
    sse_stream,
)
from tests.e2e.servers import running_server, state_url

SECRET = "slow-cel-secret-01"
QUADRATIC = "data.items.map(x, data.items.map(y, x + y)).size() > 0"


def config(directory: Path) -> dict[str, Any]:
    apis = [
        (
            "Slow",
            "sse",
            [{"name": "/t/{r}", "channel": "slow.{r}", "pipeline": [{"filter": QUADRATIC}]}],
        ),
        ("Plain", "sse", [{"name": "/t/{r}", "channel": "plain.{r}"}]),
        ("In", "websocket", [{"name": "/{ns}/{r}", "mode": "publish", "channel": "{ns}.{r}"}]),
    ]
    return {
        "gateway": {"state": state_url(directory), "heartbeat": "1s"},
        "brokers": {"mem": {"type": "memory"}},
        "tiers": {"Free": {}},
        "apis": [
            {
                "name": name,
                "version": "1",
                "context": f"/{name.lower()}",
                "protocol": protocol,
                "broker": "mem",
                "topics": topics,
            }
            for name, protocol, topics in apis
        ],
        "applications": [
            {
                "name": "app",
                "client_id": "app",
                "client_secret": SECRET,
                "subscriptions": [
                    {"api": name, "version": "1", "tier": "Free"} for name, _, _ in apis
                ],
            }
        ],
    }


async def test_a_slow_expression_skips_the_event_and_stalls_nothing(tmp_path: Path) -> None:
    with running_server(tmp_path, config(tmp_path)) as server:
        base = server.base_url
        token = await fetch_token(base, "app", SECRET)
        async with (
            sse_stream(base, "/slow/1/t/a", token) as slow,
            sse_stream(base, "/plain/1/t/a", token) as plain,
            publisher(server.ws_url, "/in/1/slow/a", token) as to_slow,
            publisher(server.ws_url, "/in/1/plain/a", token) as to_plain,
        ):
            # Evaluated, this would take about an hour (n ** 3 steps of the binding).
            await to_slow.send({"items": list(range(3000)), "big": True})
            started = time.monotonic()
            await to_plain.send({"n": 1})
            assert payloads(await plain.events(1)) == [{"n": 1}]
            assert time.monotonic() - started < 1.0
            await to_slow.send({"items": [1, 2, 3], "big": False})
            assert payloads(await slow.events(1)) == [{"items": [1, 2, 3], "big": False}]

        async def counted() -> bool:
            text = await metrics_text(base)
            return metric(text, "streambridge_expression_errors_total", api="Slow") >= 1

        await eventually(counted, 5, "the skipped event counted")
        assert "step budget" in server.stderr()
