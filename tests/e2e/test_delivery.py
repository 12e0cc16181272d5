"""CONTRACT §10 on a real gateway (memory broker): conflation, sampling, visible lag and
per-client filters, on SSE and on the WebSocket ``streambridge.v1`` subprotocol."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from bridge.wire.sse import ParsedEvent
from tests.e2e.helpers import (
    HTTP_TIMEOUT,
    TIMEOUT,
    SSEReader,
    assert_problem,
    bearer,
    eventually,
    fetch_token,
    get,
    metric,
    metrics_text,
    publisher,
    room,
    sse_stream,
    ws_connect,
)
from tests.e2e.servers import Server, running_server, state_url

SECRET = "delivery-secret-01"
ADMIN = "delivery-admin-token-01"
QUEUE = 8  # gateway.client_queue
TIERS = {
    "All": {},
    "Conflated": {"delivery": {"conflate": {"key": "data.sym", "every": "200ms"}}},
    "Sampled": {"delivery": {"sample": {"max": 2, "per": "1h"}}},
}


def api(name: str, tier: str, protocol: str = "sse") -> dict[str, Any]:
    return {
        "name": name,
        "tiers": [tier],
        "version": "1.0.0",
        "context": f"/{name.lower()}",
        "protocol": protocol,
        "broker": "mem",
        # The slow-client test resumes through twenty 400 kB events: more than the default
        # replay.max_bytes (1 MiB) keeps.
        "replay": {"max_bytes": 16 << 20},
        "topics": [
            {"name": "/t/{room}", "channel": "q.{room}", "client_filters": True},
            {"name": "/plain/{room}", "channel": "q.{room}"},
            *(
                [
                    {"name": "/in/{room}", "mode": "publish", "channel": "q.{room}"},
                    {"name": "/chat/{room}", "mode": "both", "channel": "q.{room}"},
                ]
                if protocol == "websocket"
                else []
            ),
        ],
    }


def delivery_config(directory: Path) -> dict[str, Any]:
    tiers = {"All": "All", "Conflated": "Conflated", "Sampled": "Sampled", "Ws": "All"}
    apis = [api(name, tier, "websocket" if name == "Ws" else "sse") for name, tier in tiers.items()]
    return {
        "gateway": {"state": state_url(directory), "client_queue": QUEUE, "admin_token": ADMIN},
        "brokers": {"mem": {"type": "memory"}},
        "tiers": TIERS,
        "apis": apis,
        "applications": [
            {
                "name": "d",
                "client_id": "d",
                "client_secret": SECRET,
                "subscriptions": [
                    {"api": api, "version": "1.0.0", "tier": tier} for api, tier in tiers.items()
                ],
            }
        ],
    }


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("delivery")
    with running_server(directory, delivery_config(directory)) as server:
        yield server


@pytest.fixture
async def token(gateway: Server) -> str:
    return await fetch_token(gateway.base_url, "d", SECRET)


def sequence(event_id: str) -> int:
    return int(event_id.split(".")[0].rsplit("-", 1)[1])


async def test_a_slow_conflated_client_is_never_cut_and_ends_with_every_latest_value(
    gateway: Server, token: str
) -> None:
    r = room()
    keys = ["A", "B", "C", "D", "E"]
    last = {k: -1 for k in keys}
    async with (
        sse_stream(gateway.base_url, f"/conflated/1.0.0/t/{r}", token) as stream,
        publisher(gateway.ws_url, f"/ws/1.0.0/in/{r}", token) as pub,
    ):
        # 400 events over 5 keys at once: 50 times the client's queue; it reads nothing yet.
        for n in range(400):
            sym = keys[n % len(keys)]
            await pub.send({"sym": sym, "n": n})
            last[sym] = n
        seen: dict[str, int] = {}
        ids: list[int] = []

        async def all_latest() -> bool:
            event = await stream.next_event()
            assert event is not None, "a conflated client is never cut"
            if event.event == "lag":  # five keys flushed at once fill more than half of 8
                return False
            assert event.event is None, f"no other signal expected, got {event.event}"
            ids.append(sequence(event.id or ""))
            data = json.loads(event.data)
            seen[data["sym"]] = data["n"]
            return seen == last

        await eventually(all_latest, what="the latest value of every key")
    assert ids == sorted(ids) and len(set(ids)) == len(ids), "ids stay increasing"
    assert len(ids) < 100, "most events were conflated"
    text = await metrics_text(gateway.base_url)
    assert metric(text, "streambridge_conflated_events_total", api="Conflated") >= 300


async def test_a_resumed_conflated_stream_gets_the_latest_per_key_after_the_id(
    gateway: Server, token: str
) -> None:
    r = room()
    async with publisher(gateway.ws_url, f"/ws/1.0.0/in/{r}", token) as pub:
        async with sse_stream(gateway.base_url, f"/conflated/1.0.0/t/{r}", token) as stream:
            await pub.send({"sym": "A", "n": 0})
            first = await stream.next_event()
        assert first is not None and first.id is not None
        for n, sym in enumerate("ABABCA", start=1):
            await pub.send({"sym": sym, "n": n})
        headers = {"Last-Event-ID": first.id}
        path = f"/conflated/1.0.0/t/{r}"
        async with sse_stream(gateway.base_url, path, token, headers=headers) as stream:
            events = [await stream.next_event() for _ in range(3)]
    got = [json.loads(e.data) for e in events if e is not None]
    assert got == [{"sym": "B", "n": 4}, {"sym": "C", "n": 5}, {"sym": "A", "n": 6}]


async def test_a_sampled_client_gets_max_per_window_and_sampled_out_is_counted(
    gateway: Server, token: str
) -> None:
    r = room()
    before = metric(await metrics_text(gateway.base_url), "streambridge_sampled_out_total")
    async with (
        sse_stream(gateway.base_url, f"/sampled/1.0.0/t/{r}", token) as stream,
        publisher(gateway.ws_url, f"/ws/1.0.0/in/{r}", token) as pub,
    ):
        for n in range(20):
            await pub.send({"n": n})

        async def sampled_out() -> bool:
            text = await metrics_text(gateway.base_url)
            return metric(text, "streambridge_sampled_out_total", api="Sampled") >= before + 18

        await eventually(sampled_out, what="18 events sampled out")
        got = [await stream.next_event() for _ in range(2)]
        assert [json.loads(e.data) for e in got if e] == [{"n": 0}, {"n": 1}]
        with pytest.raises(TimeoutError):
            await stream.next_event(timeout=0.5)  # nothing else comes, and no cut either


async def test_a_slow_client_on_all_gets_lag_then_is_cut_and_resumes_with_its_last_id(
    gateway: Server, token: str
) -> None:
    """A client that reads slowly (and keeps its own receive buffer small, as one that
    reads a little at a time should) sees ``lag`` once half a queue behind; when it falls
    a whole queue behind it is cut, and resumes with its last id, losing nothing.

    Each event is larger than the gateway's bounded send buffer and the client's receive
    buffer together, so what is in flight beyond the queue is one event written and one
    in the writer's hands: the queue is what the client is behind by."""
    r = room()
    big = "x" * 400_000
    path = f"/all/1.0.0/t/{r}"
    small_receive_buffer = [(socket.SOL_SOCKET, socket.SO_RCVBUF, 16_384)]
    transport = httpx.AsyncHTTPTransport(socket_options=small_receive_buffer)
    slow_cuts = metric(
        await metrics_text(gateway.base_url), "streambridge_slow_client_disconnects_total"
    )
    async with (
        httpx.AsyncClient(timeout=HTTP_TIMEOUT, transport=transport) as client,
        client.stream("GET", gateway.base_url + path, headers=bearer(token)) as response,
        sse_stream(gateway.base_url, path, token) as fast,
        publisher(gateway.ws_url, f"/ws/1.0.0/in/{r}", token) as pub,
    ):
        assert response.status_code == 200
        slow = SSEReader(response)

        async def read_fast(count: int) -> list[int]:
            got: list[int] = []
            while len(got) < count:
                event = await fast.next_event(timeout=15)
                assert event is not None, "the fast client is not cut"
                if event.event is None:  # (a burst may put even it half a queue behind)
                    got.append(json.loads(event.data)["n"])
            return got

        async def publish(numbers: range) -> None:
            # A client reading everything as it comes (it must not fall behind itself).
            reading = asyncio.create_task(read_fast(len(numbers)))
            for n in numbers:
                await pub.send({"n": n, "pad": big})
            # The hub hands each event to every client in one loop: once the fast client
            # has the last, the slow one has it queued.
            assert await reading == list(numbers)

        # The slow client reads nothing while 8 events come: one written, one in the
        # writer's hands, about 6 queued (of 8): more than half.
        await publish(range(8))
        events: list[ParsedEvent] = []
        while (event := await slow.next_event(timeout=15)) is not None:
            if event.event == "lag":
                lag = json.loads(event.data)
                break
            events.append(event)
        else:
            pytest.fail("the slow client was cut without a lag signal")
        assert event.id is None, "a lag signal has no id"
        assert lag["limit"] == QUEUE and QUEUE // 2 < lag["behind"] <= QUEUE, lag

        # It stops reading again while 12 more come: a whole queue behind, it is cut.
        await publish(range(8, 20))

        async def cut() -> bool:
            text = await metrics_text(gateway.base_url)
            return metric(text, "streambridge_slow_client_disconnects_total") > slow_cuts

        await eventually(cut, what="the slow client's cut")
        with contextlib.suppress(httpx.RemoteProtocolError):  # cut: no last chunk
            while (event := await slow.next_event(timeout=15)) is not None:
                events.append(event)
    numbers = [json.loads(e.data)["n"] for e in events if e.event is None]
    assert numbers == list(range(len(numbers))) and len(numbers) < 20, "cut before the end"
    last = events[-1].id
    assert last is not None
    async with sse_stream(
        gateway.base_url, path, token, headers={"Last-Event-ID": last}
    ) as resumed:
        rest: list[int] = []
        while len(rest) < 20 - len(numbers):
            event = await resumed.next_event(timeout=15)
            assert event is not None
            if event.event is None:  # a resumed client half a queue behind gets lag too
                rest.append(json.loads(event.data)["n"])
    assert rest == list(range(len(numbers), 20)), "the resume lost nothing"
    metrics = await metrics_text(gateway.base_url)
    assert metric(metrics, "streambridge_client_lag_events_count", api="All") >= 1


async def test_filters_select_exactly_on_sse_and_websocket(gateway: Server, token: str) -> None:
    r = room()
    query = "?filter=" + quote("data.n % 3 == 0 && key == null")
    async with (
        sse_stream(
            gateway.base_url, f"/all/1.0.0/t/{r}", token, params={"filter": "data.n % 3 == 0"}
        ) as stream,
        ws_connect(gateway.ws_url, f"/ws/1.0.0/t/{r}{query}", token) as ws,
        sse_stream(
            gateway.base_url, f"/all/1.0.0/t/{r}", token, params={"filter": "data.x > 0"}
        ) as erring,
        publisher(gateway.ws_url, f"/ws/1.0.0/in/{r}", token) as pub,
    ):
        for n in range(10):
            await pub.send({"n": n, **({"x": 1} if n == 9 else {})})
        got = [await stream.next_event() for _ in range(4)]
        assert [json.loads(e.data)["n"] for e in got if e] == [0, 3, 6, 9]
        frames = [json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT)) for _ in range(4)]
        assert [f["n"] for f in frames] == [0, 3, 6, 9]
        # An evaluation error (no data.x) skips that event for that client only.
        only = await erring.next_event()
        assert only is not None and json.loads(only.data)["n"] == 9


@pytest.mark.parametrize(
    ("expression", "named"),
    [
        ("data.", "invalid CEL"),
        ("data.n == 1 || " * 100 + "true", "longer than 1024"),
        ("data.l.all(x, data.m.exists(y, y == x))", "comprehension"),
    ],
)
async def test_a_bad_filter_gets_400_naming_it(
    gateway: Server, token: str, expression: str, named: str
) -> None:
    response = await get(
        gateway.base_url, f"/all/1.0.0/t/{room()}", token, params={"filter": expression}
    )
    body = assert_problem(response, 400)
    assert "filter" in body["detail"] and named in body["detail"]


async def test_a_filter_on_a_topic_without_client_filters_gets_400(
    gateway: Server, token: str
) -> None:
    r = room()
    response = await get(
        gateway.base_url, f"/all/1.0.0/plain/{r}", token, params={"filter": "true"}
    )
    body = assert_problem(response, 400)
    assert "/plain" in body["detail"]


async def test_the_management_api_and_asyncapi_show_a_tiers_delivery(gateway: Server) -> None:
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, headers=bearer(ADMIN)) as client:
        tiers = (await client.get(f"{gateway.base_url}/api/v1/tiers")).json()
        document = (
            await client.get(f"{gateway.base_url}/api/v1/apis/Conflated/1.0.0/asyncapi")
        ).json()
    assert tiers["Conflated"]["delivery"] == {"conflate": {"key": "data.sym", "every": "200ms"}}
    assert tiers["All"]["delivery"] == "all"
    assert document["x-streambridge-delivery"] == {"Conflated": tiers["Conflated"]["delivery"]}
