"""The fan-out hub (STYLE §6, CONTRACT §5): encode once, replay log, gaps, slow clients."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from bridge.config import Replay
from bridge.cursor import parse_event_id
from bridge.errors import ConnectorError, PipelineError
from bridge.event import Event, decode_payload
from bridge.supervision import Supervisor
from bridge.wire.sse import ParsedEvent, decode_stream
from gateway import hub as hub_module
from gateway import queueing
from gateway.hub import Entry, GapNotice, Hub, IdSequence, Item, Subscriber
from pipelines import build_pipeline


@dataclass
class Clock:
    now: float = 1_700_000_000.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def perf_counter(self) -> float:
        return self.now


@dataclass
class Errors:
    seen: list[tuple[int, PipelineError, Event]] = field(default_factory=list)

    def __call__(self, index: int, error: PipelineError, event: Event) -> None:
        self.seen.append((index, error, event))


class NoConnector:
    """The hub is driven by ``emit`` here; its connector is never read."""

    name = "none"

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the connector was used: {name}")


@pytest.fixture
def clock() -> Clock:
    """The hub reads time (entry age) from the clock it is given: this one."""
    return Clock()


def make_hub(
    clock: Clock,
    max_events: int = 100,
    max_age: float = 600.0,
    sequence: IdSequence | None = None,
    max_bytes: int = 1_048_576,
) -> Hub:
    errors = Errors()
    return Hub(
        connector=NoConnector(),
        channel="orders.created",
        new_pipeline=lambda: build_pipeline([], errors),
        replay=Replay(max_events=max_events, max_age=max_age, max_bytes=max_bytes),
        epoch="abc",
        sequence=IdSequence() if sequence is None else sequence,
        clock=clock,
    )


def emit(hub: Hub, *values: Any) -> None:
    for value in values:
        hub.emit(Event("orders.created", {"n": value}))


def entries(subscriber: Subscriber) -> list[Entry]:
    out = []
    for item in subscriber.queue:
        assert not isinstance(item, GapNotice), item
        out.append(item[0])
    return out


def ids(items: list[Entry]) -> list[str]:
    return [entry.id for entry in items]


def attach(
    hub: Hub,
    subscriber: Subscriber,
    resume: str | None = None,
    event_name: str | None = None,
    topic: str | None = None,
) -> None:
    hub.attach(
        subscriber,
        after=parse_event_id(resume),
        raw_after=resume,
        event_name=event_name,
        topic=topic,
    )


# --- encode once, fan out ----------------------------------------------------------------------


def test_every_subscriber_gets_the_same_entry_and_the_same_bytes(clock: Clock) -> None:
    hub = make_hub(clock)
    subscribers = [Subscriber(10) for _ in range(3)]
    for subscriber in subscribers:
        attach(hub, subscriber, event_name="/created")
    emit(hub, 1)
    items = [subscriber.queue[0] for subscriber in subscribers]
    assert all(not isinstance(item, GapNotice) for item in items)
    first, name = items[0]  # type: ignore[misc]
    assert name == "/created"
    for entry, _ in items[1:]:  # type: ignore[misc]
        assert entry is first
    frames = [entry.sse(name) for entry, name in items]  # type: ignore[misc]
    assert all(frame is frames[0] for frame in frames)
    assert decode_stream(frames[0].decode()) == [ParsedEvent('{"n":1}', "abc-1", "/created")]


def test_each_event_name_is_encoded_once(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str | None] = []
    real = queueing.encode_event  # type: ignore[attr-defined]

    def counting(data: str, *, id: str | None = None, event: str | None = None) -> bytes:
        calls.append(event)
        return real(data, id=id, event=event)

    monkeypatch.setattr(queueing, "encode_event", counting)
    hub = make_hub(clock)
    named, plain = Subscriber(10), Subscriber(10)
    attach(hub, named, event_name="/a")
    attach(hub, plain)
    emit(hub, 1)
    for _ in range(5):
        for subscriber in (named, plain):
            ((entry, name),) = subscriber.queue  # type: ignore[misc]
            entry.sse(name)
    assert sorted(calls, key=str) == ["/a", None]
    ((entry, _),) = plain.queue  # type: ignore[misc]
    assert entry.sse(None) == b'id: abc-1\ndata: {"n":1}\n\n'


def test_ids_carry_epoch_and_increasing_sequence(clock: Clock) -> None:
    hub = make_hub(clock)
    subscriber = Subscriber(10)
    attach(hub, subscriber)
    emit(hub, "a", "b", "c")
    assert ids(entries(subscriber)) == ["abc-1", "abc-2", "abc-3"]
    assert [e.payload for e in entries(subscriber)] == ['{"n":"a"}', '{"n":"b"}', '{"n":"c"}']
    assert subscriber.wake.is_set()


def test_a_new_stream_without_resume_id_gets_only_new_events(clock: Clock) -> None:
    hub = make_hub(clock)
    emit(hub, 1, 2)
    subscriber = Subscriber(10)
    attach(hub, subscriber)
    assert not subscriber.queue
    assert not subscriber.wake.is_set()
    emit(hub, 3)
    assert ids(entries(subscriber)) == ["abc-3"]


def test_detached_subscribers_get_nothing(clock: Clock) -> None:
    hub = make_hub(clock)
    subscriber = Subscriber(10)
    attach(hub, subscriber)
    hub.detach(subscriber)
    emit(hub, 1)
    assert not subscriber.queue


# --- resuming ----------------------------------------------------------------------------------


def test_resume_gives_exactly_the_entries_after_the_id(clock: Clock) -> None:
    hub = make_hub(clock)
    emit(hub, 1, 2, 3, 4, 5)
    subscriber = Subscriber(10)
    attach(hub, subscriber, "abc-2")
    assert ids(entries(subscriber)) == ["abc-3", "abc-4", "abc-5"]
    assert subscriber.wake.is_set()
    emit(hub, 6)
    assert ids(entries(subscriber)) == ["abc-3", "abc-4", "abc-5", "abc-6"]


def test_resume_from_the_newest_id_gets_only_new_ones(clock: Clock) -> None:
    hub = make_hub(clock)
    emit(hub, 1, 2)
    subscriber = Subscriber(10)
    attach(hub, subscriber, "abc-2")
    assert not subscriber.queue
    emit(hub, 3)
    assert ids(entries(subscriber)) == ["abc-3"]


def test_backlog_uses_the_subscribers_event_name(clock: Clock) -> None:
    hub = make_hub(clock)
    emit(hub, 1, 2)
    subscriber = Subscriber(10)
    attach(hub, subscriber, "abc-1", event_name="/by-region/eu")
    ((entry, name),) = subscriber.queue  # type: ignore[misc]
    assert name == "/by-region/eu"
    assert b"event: /by-region/eu\n" in entry.sse(name)


def test_resume_older_than_the_log_queues_a_gap_then_the_whole_log(clock: Clock) -> None:
    hub = make_hub(clock, max_events=3)
    emit(hub, 1, 2, 3, 4, 5)  # the log keeps 3, 4, 5
    assert ids(list(hub.log)) == ["abc-3", "abc-4", "abc-5"]
    subscriber = Subscriber(10)
    attach(hub, subscriber, "abc-1", topic="/created")
    gap, *rest = subscriber.queue
    assert gap == GapNotice("abc-1", "abc-3", "/created")
    assert [item[0].id for item in rest] == ["abc-3", "abc-4", "abc-5"]  # type: ignore[index]


def test_resume_at_the_newest_evicted_id_misses_nothing(clock: Clock) -> None:
    hub = make_hub(clock, max_events=3)
    emit(hub, 1, 2, 3, 4, 5)
    subscriber = Subscriber(10)
    attach(hub, subscriber, "abc-2")  # everything after 2 is still there: no gap
    assert ids(entries(subscriber)) == ["abc-3", "abc-4", "abc-5"]


@pytest.mark.parametrize("resume", ["zzz-3", "garbage", "abc-", "ABC-3"])
def test_a_foreign_or_malformed_id_gets_a_gap(clock: Clock, resume: str) -> None:
    hub = make_hub(clock)
    emit(hub, 1, 2, 3)
    subscriber = Subscriber(10)
    attach(hub, subscriber, resume)
    gap, *rest = subscriber.queue
    assert gap == GapNotice(resume, "abc-1", None)
    assert [item[0].id for item in rest] == ["abc-1", "abc-2", "abc-3"]  # type: ignore[index]


def test_gap_on_an_empty_log_names_no_oldest(clock: Clock) -> None:
    hub = make_hub(clock)
    subscriber = Subscriber(10)
    attach(hub, subscriber, "old-7")
    assert list(subscriber.queue) == [GapNotice("old-7", None, None)]
    assert subscriber.wake.is_set()


def test_resume_ids_are_comparable_across_hubs_of_one_sequence(clock: Clock) -> None:
    # A multi-topic stream resumes every hub from one id: the sequence is shared.
    shared = IdSequence()
    a, b = make_hub(clock, sequence=shared), make_hub(clock, sequence=shared)
    emit(a, 1)
    emit(b, 2)
    emit(a, 3)
    subscriber = Subscriber(10)
    attach(a, subscriber, "abc-2")
    attach(b, subscriber, "abc-2")
    assert ids(entries(subscriber)) == ["abc-3"]


# --- trimming ----------------------------------------------------------------------------------


def test_max_events_bounds_the_log(clock: Clock) -> None:
    hub = make_hub(clock, max_events=2)
    emit(hub, 1, 2, 3)
    assert ids(list(hub.log)) == ["abc-2", "abc-3"]
    assert hub.evicted_upto == 1


def test_max_bytes_bounds_the_log_and_keeps_the_newest(clock: Clock) -> None:
    hub = make_hub(clock, max_bytes=40)
    emit(hub, "a" * 10, "b" * 10, "c" * 10)  # 3 payloads of 18 characters: the oldest goes
    assert ids(list(hub.log)) == ["abc-2", "abc-3"] and hub.log_chars == 36
    emit(hub, "d" * 40)  # larger than the bound on its own: kept, alone
    assert ids(list(hub.log)) == ["abc-4"] and hub.evicted_upto == 3
    subscriber = Subscriber(10)
    attach(hub, subscriber, "abc-1")
    assert isinstance(subscriber.queue[0], GapNotice)


def test_max_age_trims_old_entries(clock: Clock) -> None:
    hub = make_hub(clock, max_age=60.0)
    emit(hub, 1)
    clock.now += 30
    emit(hub, 2)
    clock.now += 31  # entry 1 is now 61 s old
    emit(hub, 3)
    assert ids(list(hub.log)) == ["abc-2", "abc-3"]
    clock.now += 100
    subscriber = Subscriber(10)
    attach(hub, subscriber, "abc-2")  # attach trims too: 2 and 3 have expired
    assert not hub.log
    assert list(subscriber.queue) == [GapNotice("abc-2", None, None)]


def test_resume_after_age_trimming_gets_a_gap(clock: Clock) -> None:
    hub = make_hub(clock, max_age=10.0)
    emit(hub, 1, 2)
    clock.now += 11
    emit(hub, 3)
    subscriber = Subscriber(10)
    attach(hub, subscriber, "abc-1")
    gap, *rest = subscriber.queue
    assert gap == GapNotice("abc-1", "abc-3", None)
    assert [item[0].id for item in rest] == ["abc-3"]  # type: ignore[index]


# --- slow clients ------------------------------------------------------------------------------


def test_a_full_queue_marks_the_subscriber_overflowed(clock: Clock) -> None:
    hub = make_hub(clock)
    slow, fast = Subscriber(2), Subscriber(100)
    attach(hub, slow)
    attach(hub, fast)
    emit(hub, 1, 2)
    assert not slow.overflowed
    emit(hub, 3)
    assert slow.overflowed
    assert ids(entries(slow)) == ["abc-1", "abc-2"]  # nothing after the cut is queued
    slow.queue.popleft()  # the client catches up a little ...
    emit(hub, 4)
    assert slow.overflowed
    assert ids(entries(slow)) == ["abc-2"]  # ... but is not fed again: it must reconnect
    assert ids(entries(fast)) == ["abc-1", "abc-2", "abc-3", "abc-4"]
    assert not fast.overflowed


def test_overflow_wakes_the_transport(clock: Clock) -> None:
    hub = make_hub(clock)
    slow = Subscriber(1)
    attach(hub, slow)
    emit(hub, 1)
    slow.wake.clear()
    emit(hub, 2)
    assert slow.overflowed
    assert slow.wake.is_set()


def test_subscriber_offer_and_close() -> None:
    subscriber = Subscriber(1)
    item: Item = GapNotice("a", None, None)
    subscriber.offer(item)
    assert list(subscriber.queue) == [item]
    subscriber.offer(item)
    assert subscriber.overflowed
    assert len(subscriber.queue) == 1
    first, second = RuntimeError("revoked"), RuntimeError("later")
    subscriber.wake.clear()
    subscriber.close(first)
    subscriber.close(second)
    assert subscriber.closed is first
    assert subscriber.wake.is_set()


def test_a_lone_surrogate_in_json_data_does_not_break_encoding(clock: Clock) -> None:
    """JSON may escape a lone surrogate; the frame must still be valid UTF-8 for everyone."""
    hub = make_hub(clock)
    subscriber = Subscriber(10)
    attach(hub, subscriber)
    data = decode_payload(b'{"text":"\\ud800 alone"}')
    hub.emit(Event("orders.created", data))
    ((entry, name),) = subscriber.queue  # type: ignore[misc]
    frame = entry.sse(name)
    (parsed,) = decode_stream(frame.decode("utf-8"))
    assert json.loads(parsed.data) == data


class FlakyConnector:
    """Yields its events, fails once in the middle (a broker outage), records from where
    each subscription started."""

    def __init__(self, events: list[Event], fail_after: int) -> None:
        self.events = events
        self.fail_after = fail_after
        self.started_from: list[str | None] = []

    async def subscribe(self, channel: str, from_cursor: str | None = None) -> Any:
        self.started_from.append(from_cursor)
        start = 0 if from_cursor is None else int(from_cursor) + 1
        for index in range(start, len(self.events)):
            if len(self.started_from) == 1 and index == self.fail_after:
                raise ConnectorError("broker went away")
            yield self.events[index]
        await asyncio.Event().wait()  # then live, nothing more


async def test_a_restarted_hub_continues_from_its_cursor_without_loss_or_repeat() -> None:
    events = [Event("c", {"n": n}, cursor=str(n)) for n in range(6)]
    connector = FlakyConnector(events, fail_after=3)
    restarts: list[str] = []
    async with Supervisor("test", first_delay=0.01) as supervisor:
        hubs = hub_module.HubSet("abc", supervisor)
        hubs.on_restart = restarts.append
        hub = hubs.get(
            ("broker", "c", "[]"),
            lambda: Hub(
                connector=connector,  # type: ignore[arg-type]
                channel="c",
                new_pipeline=lambda: build_pipeline([], lambda *_: None),
                replay=Replay(),
                epoch="abc",
                sequence=hubs.sequence,
            ),
        )
        subscriber = Subscriber(100)
        hub.attach(subscriber, after=None, raw_after=None, event_name=None, topic=None)

        async def all_six() -> None:
            while len(subscriber.queue) < 6:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(all_six(), 5.0)
        await hubs.aclose()
    payloads = [
        json.loads(item[0].payload)["n"] for item in subscriber.queue if isinstance(item, tuple)
    ]
    assert payloads == [0, 1, 2, 3, 4, 5]
    assert connector.started_from == [None, "2"]
    assert restarts == ["broker"]
