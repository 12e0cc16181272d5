"""CONTRACT §9: health, readiness and Prometheus metrics of a running gateway."""

from __future__ import annotations

import httpx

from tests.e2e.helpers import (
    HTTP_TIMEOUT,
    eventually,
    fetch_token,
    metric,
    metrics_text,
    publisher,
    recv_json,
    room,
    samples,
    sse_stream,
    ws_connect,
)
from tests.e2e.servers import MAIN_SECRET, SECRETS, Server


async def test_healthz(server: Server) -> None:
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
        response = await client.get(f"{server.base_url}/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_readyz_reports_its_checks(server: Server) -> None:
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
        response = await client.get(f"{server.base_url}/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"] == {"state": True, "broker:mem": True}


async def test_metrics_after_traffic(server: Server, token: str) -> None:
    before = await metrics_text(server.base_url)
    sse_labels = {"api": "Events", "version": "1.0.0", "topic": "/fixed"}
    ws_labels = {"api": "Feed", "version": "1.0.0", "topic": "/watch/{room}"}
    async with (
        sse_stream(server.base_url, "/events/1.0.0/fixed", token) as stream,
        ws_connect(server.ws_url, "/feed/1.0.0/watch/fixed", token) as watcher,
        publisher(server.ws_url, "/feed/1.0.0/in/e2e/fixed", token) as pub,
    ):
        await pub.send_all([{"n": 1}, {"n": 2}])
        assert len(await stream.events(2)) == 2
        assert [await recv_json(watcher), await recv_json(watcher)] == [{"n": 1}, {"n": 2}]
        during = await metrics_text(server.base_url)
    assert metric(during, "streambridge_open_connections", protocol="sse") >= 1
    assert metric(during, "streambridge_open_connections", protocol="websocket") >= 2

    def grew(sample: str, by: float, **labels: str) -> None:
        assert metric(during, sample, **labels) - metric(before, sample, **labels) == by, (
            sample,
            labels,
        )

    grew("streambridge_events_in_total", 2, **sse_labels)
    # /watch/fixed reads the same channel through the same hub: it counts its events too.
    grew("streambridge_events_in_total", 2, **ws_labels)
    grew("streambridge_events_out_total", 2, **sse_labels, protocol="sse")
    grew("streambridge_events_out_total", 2, **ws_labels, protocol="websocket")
    buckets = samples(during, "streambridge_delivery_latency_seconds_bucket")
    assert buckets and all(set(b) == {"le"} for b in buckets)
    assert {"+Inf", "0.001", "1.0"} <= {b["le"] for b in buckets}
    assert (
        metric(during, "streambridge_delivery_latency_seconds_count")
        >= metric(before, "streambridge_delivery_latency_seconds_count") + 2
    )
    assert metric(during, "streambridge_delivery_latency_seconds_bucket", le="+Inf") == metric(
        during, "streambridge_delivery_latency_seconds_count"
    )
    for name in ("throttled", "revoked", "slow_client_disconnects", "expression_errors"):
        assert f"# TYPE streambridge_{name}_total counter" in during


async def test_throttled_streams_are_counted(server: Server, token: str) -> None:
    trickle = await fetch_token(server.base_url, "trickle-ops", SECRETS["trickle-ops"])
    labels = {"api": "Events", "version": "1.0.0"}
    before = metric(await metrics_text(server.base_url), "streambridge_throttled_total", **labels)
    r = room()
    async with (
        sse_stream(server.base_url, f"/events/1.0.0/t/{r}", trickle) as stream,
        publisher(server.ws_url, f"/feed/1.0.0/in/e2e/{r}", token) as pub,
    ):
        await pub.send_all([{"n": n} for n in range(4)])
        events = await stream.rest()
    assert [e.event for e in events] == [None, None, None, "throttled"]
    after = metric(await metrics_text(server.base_url), "streambridge_throttled_total", **labels)
    assert after == before + 1  # counted before the final event is written


async def test_tokens_in_query_strings_never_reach_the_log(server: Server) -> None:
    """uvicorn logs each WebSocket request line with its query: ?access_token= is redacted."""
    token = await fetch_token(server.base_url, "main", MAIN_SECRET)
    path = f"/feed/1.0.0/watch/{room()}"
    async with ws_connect(server.ws_url, path + f"?access_token={token}") as ws:
        await ws.ping()
    await eventually(lambda: _async(path in server.stderr()), what="the request line in the log")
    assert token not in server.stderr()
    assert "access_token=[redacted]" in server.stderr()


async def _async(value: bool) -> bool:
    return value
