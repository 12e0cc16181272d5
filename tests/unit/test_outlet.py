"""gateway/outlet.py without sockets: what an Outlet writes, when it refuses, and what
gateway.coalesce gathers into one write (issue 14)."""

from __future__ import annotations

import asyncio
import socket

from bridge.errors import ClientGone
from gateway.connections import Rate
from gateway.metrics import Histogram, Value
from gateway.outlet import Coalescer, Outlet
from gateway.queueing import Entry, Subscriber


class Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closing


def entry(n: int) -> Entry:
    return Entry(f"id-{n}", n, 0.0, f'{{"n":{n}}}', 0.0)


def armed(
    window: Rate | None = None, coalescer: Coalescer | None = None
) -> tuple[Subscriber, Outlet, Transport]:
    transport = Transport()
    outlet = Outlet(transport)  # type: ignore[arg-type]
    subscriber = Subscriber(8)
    outlet.claim(
        subscriber,
        Entry.sse_chunk,
        window=window,
        counters={None: Value()},
        latency=Histogram("h", "h", [1.0]),
        coalescer=coalescer,
    )
    subscriber.arm(outlet)
    return subscriber, outlet, transport


def test_an_armed_subscriber_gets_each_event_written_as_one_http_chunk() -> None:
    subscriber, outlet, transport = armed()
    subscriber.offer((entry(1), None))
    frame = entry(1).sse(None)
    assert transport.writes == [b"%x\r\n%b\r\n" % (len(frame), frame)]
    assert not subscriber.queue and not subscriber.wake.is_set()
    assert (outlet.sent, outlet.last_id) == (1, "id-1")


def test_a_paused_transport_sends_the_event_and_all_after_it_to_the_queue() -> None:
    subscriber, outlet, transport = armed()
    outlet.pause()
    subscriber.offer((entry(1), None))
    outlet.resume()
    subscriber.offer((entry(2), None))  # behind the first, in order: the writer sends both
    assert transport.writes == []
    assert [item[0].id for item in subscriber.queue] == ["id-1", "id-2"]  # type: ignore[index]
    assert subscriber.wake.is_set()


def test_a_spent_window_leaves_the_event_to_the_queue_path_which_throttles() -> None:
    subscriber, _, transport = armed(window=Rate(("client", "api", "1.0.0"), 1, None))
    subscriber.offer((entry(1), None))
    subscriber.offer((entry(2), None))
    assert len(transport.writes) == 1
    assert len(subscriber.queue) == 1


def test_a_hang_up_closes_the_stream() -> None:
    subscriber, outlet, _ = armed()
    outlet.lost()
    assert isinstance(subscriber.closed, ClientGone)
    assert subscriber.outlet is None


async def test_coalesced_events_go_out_in_one_write_after_the_delay() -> None:
    subscriber, _, transport = armed(coalescer=Coalescer(0.005))
    for n in range(3):
        subscriber.offer((entry(n), None))
    assert transport.writes == []
    await asyncio.sleep(0.05)
    assert transport.writes == [b"".join(entry(n).sse_chunk(None) for n in range(3))]


async def test_by_default_a_turns_first_event_goes_at_once_and_the_rest_together() -> None:
    """One pass over the clients per event: a client's first event of a loop turn is
    written at once; the rest of a burst in that turn go out in one write at its end."""
    subscriber, _, transport = armed(coalescer=Coalescer())
    for n in (1, 2, 3):
        subscriber.offer((entry(n), None))
    assert transport.writes == [entry(1).sse_chunk(None)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert transport.writes[1:] == [entry(2).sse_chunk(None) + entry(3).sse_chunk(None)]
    subscriber.offer((entry(4), None))  # a new turn: at once again
    assert transport.writes[2:] == [entry(4).sse_chunk(None)]


async def test_tcp_nodelay_false_runs_the_stream_with_nagle_and_restores_it_after() -> None:
    """gateway.tcp_nodelay: false: the socket of a claimed stream runs Nagle's algorithm
    (as nginx runs nchan's subscribers); when the stream ends, TCP_NODELAY is back on, so
    the response's end and any next response on the connection are not held."""
    accepted: asyncio.Future[asyncio.Transport] = asyncio.get_running_loop().create_future()

    class Accept(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            accepted.set_result(transport)  # type: ignore[arg-type]

    listener = await asyncio.get_running_loop().create_server(Accept, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    transport = await accepted
    sock = transport.get_extra_info("socket")

    def nodelay() -> int:
        return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    try:
        assert nodelay() == 1  # asyncio's default for TCP
        for setting, during in ((True, 1), (False, 0)):
            outlet = Outlet(transport)
            outlet.claim(
                Subscriber(8),
                Entry.sse_chunk,
                window=None,
                counters={None: Value()},
                latency=Histogram("h", "h", [1.0]),
                coalescer=Coalescer(nodelay=setting),
            )
            assert nodelay() == during
            outlet.release()
            assert nodelay() == 1
    finally:
        writer.close()
        transport.close()
        listener.close()
