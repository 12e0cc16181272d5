"""CONTRACT §10 in the core: tier ``delivery`` config, client filter pricing, the
per-connection gates (conflate, sample, filter) and the v1 frame parser (§6)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.client_filter import compile_client_filter
from bridge.config import ConflateDelivery, SampleDelivery, Tier, parse_config
from bridge.cost import affordable_values
from bridge.errors import ConfigError, InvalidFilter
from bridge.event import Event
from bridge.wire import websocket_v1 as v1
from gateway.delivery import ConnectionGate, Policy, policy_for
from gateway.queueing import Entry, GapNotice, GatedSubscriber, Item


def test_a_tier_takes_each_delivery_policy_and_all_is_the_default() -> None:
    assert Tier().delivery == "all"
    bronze = Tier.model_validate({"delivery": {"conflate": {"key": "data.s", "every": "1s"}}})
    assert isinstance(bronze.delivery, ConflateDelivery) and bronze.delivery.conflate.every == 1
    digest = Tier.model_validate({"delivery": {"sample": {"max": 1, "per": "5s"}}})
    assert isinstance(digest.delivery, SampleDelivery) and digest.delivery.sample.per == 5
    assert bronze.model_dump(mode="json")["delivery"] == {
        "conflate": {"key": "data.s", "every": "1s"}
    }


def test_bad_delivery_policies_name_every_field() -> None:
    raw = {
        "tiers": {
            "A": {"delivery": {"conflate": {"key": "data.", "every": "0s"}}},
            "B": {"delivery": {"sample": {"max": 0, "per": "1s"}}},
        }
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, {})
    text = str(caught.value)
    assert "tiers.A.delivery" in text and "key" in text and "every" in text
    assert "tiers.B.delivery" in text and "max" in text


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("x" * 1025, "longer than 1024"),
        ("data.", "invalid CEL"),
        ("data.a.all(x, data.b.exists(y, y == x))", "comprehension"),
        ("(" * 17 + "1" + ")" * 17, "deeper than 16"),
    ],
)
def test_a_client_filter_is_priced_then_compiled(source: str, problem: str) -> None:
    with pytest.raises(InvalidFilter, match=problem):
        compile_client_filter(source)


def test_brackets_and_comprehension_names_inside_strings_are_not_counted() -> None:
    compile_client_filter("data.s == '((((((((((((((((((.all(' && data.l.all(x, x > 0)")


def entry(n: int, key: str | None = None, **data: Any) -> tuple[Entry, str | None]:
    event = Event("c", {"n": n, **data}, key=key)
    return (Entry(f"e-{n}", n, 0.0, json.dumps(event.data), 0.0, None, None, event), None)


def numbers(items: list[Item]) -> list[int]:
    return [item[0].sequence for item in items if isinstance(item, tuple)]


async def test_conflation_flushes_the_latest_per_key_in_order_and_never_overflows() -> None:
    subscriber = GatedSubscriber(limit=2)
    counted: list[int] = []
    delivery = Tier.model_validate(
        {"delivery": {"conflate": {"key": "data.k", "every": "10ms"}}}
    ).delivery
    policy = policy_for(subscriber, delivery, conflated=counted.append, sampled_out=print)
    subscriber.pass_through(ConnectionGate(None, policy))
    for n, k in enumerate("ABABCA"):
        subscriber.offer(entry(n, k=k))
    assert not subscriber.queue, "nothing before the interval"
    subscriber.offer(GapNotice("x", None, None))
    assert isinstance(subscriber.queue[0], GapNotice), "signals pass straight through"
    subscriber.queue.clear()
    while len(subscriber.queue) < 2:
        await asyncio.sleep(0.005)
    assert numbers(list(subscriber.queue)) == [3, 4], "B then C: the queue holds 2"
    assert not subscriber.overflowed
    subscriber.queue.clear()
    while not subscriber.queue:
        await asyncio.sleep(0.005)
    assert numbers(list(subscriber.queue)) == [5], "A, still pending, comes next"
    assert sum(counted) == 3
    policy.close()


async def test_a_conflated_backlog_keeps_the_latest_per_key() -> None:
    subscriber = GatedSubscriber(limit=10)
    delivery = Tier.model_validate({"delivery": {"conflate": {"key": "key", "every": "1s"}}})
    policy = policy_for(subscriber, delivery.delivery, conflated=print, sampled_out=print)
    items: list[Item] = [entry(n, key=k) for n, k in enumerate("ABAB", start=1)]
    assert numbers(policy.backlog(items)) == [3, 4]


async def test_sampling_lets_max_through_per_window() -> None:
    subscriber = GatedSubscriber(limit=10)
    skipped: list[int] = []
    delivery = Tier.model_validate({"delivery": {"sample": {"max": 2, "per": "1h"}}}).delivery
    subscriber.pass_through(
        ConnectionGate(
            None, policy_for(subscriber, delivery, conflated=print, sampled_out=skipped.append)
        )
    )
    for n in range(5):
        subscriber.offer(entry(n))
    assert numbers(list(subscriber.queue)) == [0, 1] and sum(skipped) == 3


async def test_a_filter_skips_events_it_fails_on_for_this_client_only() -> None:
    subscriber = GatedSubscriber(limit=10)
    subscriber.pass_through(ConnectionGate(compile_client_filter("data.x > 1"), Policy(subscriber)))
    subscriber.offer(entry(1, x=2))
    subscriber.offer(entry(2))  # no data.x: an evaluation error
    subscriber.offer(entry(3, x=0))
    subscriber.backfill([entry(4, x=5), entry(5)])
    assert numbers(list(subscriber.queue)) == [1, 4]


async def test_a_filter_comprehension_runs_only_on_events_it_can_afford() -> None:
    """Evaluation has a cost limit: the step budget, as for pipeline steps (bridge.cost)."""
    budget = 0.005
    cap = affordable_values(budget, 1)
    subscriber = GatedSubscriber(limit=10)
    exists = compile_client_filter("data.l.exists(x, x == 7)")
    subscriber.pass_through(ConnectionGate(exists, Policy(subscriber), budget))
    subscriber.offer(entry(1, l=[7]))
    subscriber.offer(entry(2, l=[7, *range(100, 100 + cap)]))  # too many values: skipped
    subscriber.offer(entry(3, l=[1, 2]))  # evaluated: no 7
    subscriber.offer(entry(4, l=list(range(cap // 2))))  # holds 7: cap is far above 8
    assert numbers(list(subscriber.queue)) == [1, 4]


def test_v1_publish_frames_parse() -> None:
    publish = v1.parse_publish('{"ref": "1", "data": {"a": 1}, "key": "k", "headers": {"h": "v"}}')
    assert publish == v1.Publish({"a": 1}, "1", "k", {"h": "v"})
    assert v1.parse_publish('{"data": null}') == v1.Publish(None)
    assert v1.offered("chat, streambridge.v1") and not v1.offered("streambridge.v2")


@given(
    st.one_of(
        st.text(),
        st.binary(),
        st.recursive(
            st.none() | st.integers() | st.text(),
            lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
        ).map(json.dumps),
    )
)
def test_a_v1_frame_parses_or_raises_malformed_frame(raw: str | bytes) -> None:
    try:
        publish = v1.parse_publish(raw)
    except v1.MalformedFrame as exc:
        assert exc.detail
        json.loads(v1.error(exc.detail, exc.ref))
    else:
        assert publish.ref is None or isinstance(publish.ref, str)
        assert all(isinstance(v, str) for v in publish.headers.values())
