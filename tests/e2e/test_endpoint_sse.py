"""An SSE API fronting an existing SSE server (CONTRACT §13): one shared upstream
connection per URL, reconnects with Last-Event-ID, resume through the upstream across a
gateway restart, ``event: gap`` when the upstream has no ids, URL mapping, and nothing
of the client's token upstream."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.e2e.endpoint_setup import SECRET, TICKS, endpoint_config
from tests.e2e.helpers import eventually, fetch_token, get, metric, metrics_text, sse_stream
from tests.e2e.servers import free_port, running_server
from tests.e2e.upstreams import SseOrigin, sse_origin

UPSTREAM_TICKS = "/stream/ticks"


def config(tmp_path: Path, origin: SseOrigin) -> dict[str, object]:
    return endpoint_config(tmp_path, sse_url=origin.url, ws_url="ws://127.0.0.1:9")


async def test_every_client_shares_one_upstream_connection_and_ids_carry_upstream_ids(
    tmp_path: Path,
) -> None:
    async with sse_origin() as origin:
        with running_server(tmp_path, config(tmp_path, origin)) as server:
            token = await fetch_token(server.base_url, "app", SECRET)
            async with (
                sse_stream(server.base_url, TICKS, token) as first,
                sse_stream(server.base_url, TICKS, token) as second,
                sse_stream(server.base_url, TICKS, token) as third,
            ):
                await origin.wait_for_connections(UPSTREAM_TICKS, 1)
                origin.publish(UPSTREAM_TICKS, json.dumps({"tick": 1}))
                origin.publish(UPSTREAM_TICKS, "plain text")
                for stream in (first, second, third):
                    events = await stream.events(2)
                    assert [e.data for e in events] == ['{"tick":1}', "plain text"]
                    assert [e.id.rsplit(".", 1)[1] for e in events if e.id] == ["1", "2"]
                assert origin.open_connections(UPSTREAM_TICKS) == 1, "one upstream connection"
                ticks = [r for r in origin.requests if r.path == UPSTREAM_TICKS]
                assert len(ticks) == 1
                metrics = (await get(server.base_url, "/metrics")).text
                assert 'streambridge_upstream_connections{api="Clock/1.0.0"} 1.0' in metrics
            for request in origin.requests:  # the client's token never goes upstream
                assert "authorization" not in request.headers
                assert all(token not in value for value in request.headers.values())
                assert token not in request.path


async def test_url_mapping_fills_path_parameters_and_topics_combine(tmp_path: Path) -> None:
    async with sse_origin() as origin:
        with running_server(tmp_path, config(tmp_path, origin)) as server:
            token = await fetch_token(server.base_url, "app", SECRET)
            async with sse_stream(server.base_url, "/clock/1.0.0/rooms/blue-7", token) as blue:
                await origin.wait_for_connections("/rooms/blue-7/events", 1)
                origin.publish("/rooms/red/events", "not for blue")
                origin.publish("/rooms/blue-7/events", "for blue")
                (event,) = await blue.events(1)
                assert event.data == "for blue"
            both = [("topic", "/ticks"), ("topic", "/rooms/red")]
            async with sse_stream(server.base_url, "/clock/1.0.0", token, params=both) as multi:
                await origin.wait_for_connections("/rooms/red/events", 1)
                origin.publish("/rooms/red/events", "red")
                origin.publish(UPSTREAM_TICKS, "tick")
                events = {(e.event, e.data) for e in await multi.events(2)}
                assert events == {("/rooms/red", "red"), ("/ticks", "tick")}


async def test_an_upstream_drop_is_reconnected_with_last_event_id_without_loss(
    tmp_path: Path,
) -> None:
    async with sse_origin(retry_ms=100) as origin:
        with running_server(tmp_path, config(tmp_path, origin)) as server:
            token = await fetch_token(server.base_url, "app", SECRET)
            async with sse_stream(server.base_url, TICKS, token) as stream:
                await origin.wait_for_connections(UPSTREAM_TICKS, 1)
                origin.publish(UPSTREAM_TICKS, "a")
                origin.publish(UPSTREAM_TICKS, "b")
                assert [e.data for e in await stream.events(2)] == ["a", "b"]
                origin.drop()
                # Published while the gateway is not connected: it asks for them again.
                origin.publish(UPSTREAM_TICKS, "c")
                origin.publish(UPSTREAM_TICKS, "d")
                await origin.wait_for_connections(UPSTREAM_TICKS, 1)
                origin.publish(UPSTREAM_TICKS, "e")
                assert [e.data for e in await stream.events(3)] == ["c", "d", "e"]
            again = [r for r in origin.requests if r.path == UPSTREAM_TICKS][-1]
            assert again.headers.get("last-event-id") == "2"


async def test_an_upstream_without_ids_gives_a_gap_after_a_drop(tmp_path: Path) -> None:
    async with sse_origin(ids=False, retry_ms=100) as origin:
        with running_server(tmp_path, config(tmp_path, origin)) as server:
            token = await fetch_token(server.base_url, "app", SECRET)
            async with sse_stream(server.base_url, TICKS, token) as stream:
                await origin.wait_for_connections(UPSTREAM_TICKS, 1)
                origin.publish(UPSTREAM_TICKS, "a")
                assert [e.data for e in await stream.events(1)] == ["a"]
                origin.drop()
                origin.publish(UPSTREAM_TICKS, "lost")  # no id: cannot be asked for again
                gap = await stream.next_event(10)
                assert gap is not None and gap.event == "gap", "never a silent skip"
                await origin.wait_for_connections(UPSTREAM_TICKS, 1)
                origin.publish(UPSTREAM_TICKS, "b")
                assert [e.data for e in await stream.events(1)] == ["b"]


async def test_resume_across_a_gateway_restart_reads_the_upstream_from_the_id(
    tmp_path: Path,
) -> None:
    async with sse_origin() as origin:
        settings = config(tmp_path, origin)
        with running_server(tmp_path, settings) as server:
            token = await fetch_token(server.base_url, "app", SECRET)
            async with sse_stream(server.base_url, TICKS, token) as stream:
                await origin.wait_for_connections(UPSTREAM_TICKS, 1)
                for n in (1, 2, 3):
                    origin.publish(UPSTREAM_TICKS, str(n))
                seen = await stream.events(3)
        for n in (4, 5):  # while no gateway runs
            origin.publish(UPSTREAM_TICKS, str(n))
        with running_server(tmp_path, settings) as server:
            token = await fetch_token(server.base_url, "app", SECRET)
            await origin.wait_for_connections(UPSTREAM_TICKS, 1)
            # Before the new hub has read an id it cannot tell where its live part
            # begins among the upstream's ids: the client hears of a gap, not silence.
            early_id = {"Last-Event-ID": seen[2].id or ""}
            async with sse_stream(server.base_url, TICKS, token, headers=early_id) as early:
                gap = await early.next_event()
                assert gap is not None and gap.event == "gap"
            async with sse_stream(server.base_url, TICKS, token) as fresh:
                origin.publish(UPSTREAM_TICKS, "6")
                assert [e.data for e in await fresh.events(1)] == ["6"], "the hub is live"
            headers = {"Last-Event-ID": seen[1].id or ""}
            async with sse_stream(server.base_url, TICKS, token, headers=headers) as resumed:
                assert [e.data for e in await resumed.events(4)] == ["3", "4", "5", "6"]
                origin.publish(UPSTREAM_TICKS, "7")
                assert [e.data for e in await resumed.events(1)] == ["7"], "then live"


async def test_an_upstream_answering_no_stream_is_retried_and_clients_keep_heartbeats(
    tmp_path: Path,
) -> None:
    async with sse_origin(answer=(500, "text/html")) as origin:
        settings = config(tmp_path, origin)
        settings["gateway"]["heartbeat"] = "1s"  # type: ignore[index]
        settings["apis"][0]["endpoint"]["suspend"] = {"after_failures": 100, "for": "1s"}  # type: ignore[index]
        with running_server(tmp_path, settings) as server:
            token = await fetch_token(server.base_url, "app", SECRET)
            async with sse_stream(server.base_url, TICKS, token) as stream:
                while sum(r.path == UPSTREAM_TICKS for r in origin.requests) < 3:
                    block = await stream.next_block(10)  # heartbeats meanwhile
                    assert block is not None
                assert "500" in server.stderr(), "the status is logged"
                origin.answer = (200, "text/event-stream")
                await origin.wait_for_connections(UPSTREAM_TICKS, 1, timeout=40)
                origin.publish(UPSTREAM_TICKS, "at last")
                assert [e.data for e in await stream.events(1, timeout=10)] == ["at last"]


async def test_open_clients_keep_their_stream_across_a_short_upstream_outage(
    tmp_path: Path,
) -> None:
    async with sse_origin(retry_ms=100) as origin:
        port = origin.port
        with running_server(tmp_path, config(tmp_path, origin)) as server:
            token = await fetch_token(server.base_url, "app", SECRET)
            async with sse_stream(server.base_url, TICKS, token) as stream:
                await origin.wait_for_connections(UPSTREAM_TICKS, 1)
                origin.publish(UPSTREAM_TICKS, "before")
                assert [e.data for e in await stream.events(1)] == ["before"]
                await origin.stop()  # not listening: connects fail for a while
                origin.publish(UPSTREAM_TICKS, "during")
                await origin.start(port)
                await origin.wait_for_connections(UPSTREAM_TICKS, 1)
                origin.publish(UPSTREAM_TICKS, "after")
                assert [e.data for e in await stream.events(2)] == ["during", "after"]


async def test_an_endpoint_failing_in_a_row_is_suspended_then_probed(tmp_path: Path) -> None:
    origin = SseOrigin()
    origin.port = free_port()  # nothing listens there yet
    settings = config(tmp_path, origin)
    settings["apis"][0]["endpoint"]["suspend"] = {"after_failures": 2, "for": "3s"}  # type: ignore[index]
    with running_server(tmp_path, settings) as server:
        token = await fetch_token(server.base_url, "app", SECRET)

        async def refused() -> httpx.Response | None:
            response = await get(server.base_url, TICKS, token)
            return response if response.status_code == 503 else None

        # The eager hub's connects fail; after two the endpoint is suspended.
        response = await eventually(refused, what="the endpoint suspended")
        assert response.json()["code"] == "endpoint_suspended"
        assert 1 <= int(response.headers["Retry-After"]) <= 3
        ready = await get(server.base_url, "/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["endpoint:Clock/1.0.0"] is False
        text = await metrics_text(server.base_url)
        assert metric(text, "streambridge_endpoint_suspended", api="Clock/1.0.0") == 1.0
        await origin.start()
        try:
            # After the period the hub probes the endpoint and connects.
            await origin.wait_for_connections(UPSTREAM_TICKS, 1, timeout=10)
            async with sse_stream(server.base_url, TICKS, token) as stream:
                origin.publish(UPSTREAM_TICKS, "back")
                assert [e.data for e in await stream.events(1)] == ["back"]
            assert (await get(server.base_url, "/readyz")).status_code == 200
        finally:
            await origin.stop()
