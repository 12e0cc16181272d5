"""Pipelines (CONTRACT §2): plumbing, filter, map, window, dedupe, sample."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter

from bridge.config import Step
from bridge.errors import PipelineError
from bridge.event import Event
from bridge.expressions import compile_expression
from pipelines import Pipeline, build_pipeline
from pipelines.operators import Dedupe, Sample
from pipelines.values import period_index
from pipelines.window import windows_holding

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z, a multiple of 10 s
STEPS: TypeAdapter[list[Step]] = TypeAdapter(list[Step])


@dataclass
class Errors:
    seen: list[tuple[int, PipelineError, Event]] = field(default_factory=list)

    def __call__(self, index: int, error: PipelineError, event: Event) -> None:
        self.seen.append((index, error, event))


def build(steps: list[dict[str, Any]], errors: Errors | None = None) -> Pipeline:
    return build_pipeline(STEPS.validate_python(steps), errors if errors is not None else Errors())


def event(data: Any, *, channel: str = "orders.created", key: str | None = None) -> Event:
    return Event(channel=channel, data=data, key=key, time=T0)


def datas(events: list[Event]) -> list[Any]:
    return [e.data for e in events]


def test_empty_pipeline_passes_the_event_through() -> None:
    pipeline = build([])
    one = event({"a": 1})
    assert pipeline.feed(one, T0) == [one]
    assert pipeline.flush(T0 + 100) == []
    assert pipeline.next_deadline() is None
    assert pipeline.stateless


def test_filter_keeps_true_and_drops_false() -> None:
    pipeline = build([{"filter": "data.amount > 100"}])
    big, small = event({"amount": 150}), event({"amount": 50})
    assert pipeline.feed(big, T0) == [big]
    assert pipeline.feed(small, T0) == []
    assert pipeline.stateless


def test_filter_over_key_headers_and_channel() -> None:
    pipeline = build([{"filter": "key == 'k1' && channel.startsWith('orders.')"}])
    assert len(pipeline.feed(event({}, key="k1"), T0)) == 1
    assert pipeline.feed(event({}, key="k2"), T0) == []
    assert pipeline.feed(event({}, key="k1", channel="users.x"), T0) == []


def test_filter_error_reports_and_the_stream_goes_on() -> None:
    errors = Errors()
    pipeline = build([{"filter": "data.amount > 100"}], errors)
    broken, good = event({"id": 1}), event({"amount": 500})
    assert pipeline.feed(broken, T0) == []
    assert pipeline.feed(good, T0) == [good]
    assert len(errors.seen) == 1
    index, error, failed = errors.seen[0]
    assert (index, failed) == (0, broken)
    assert isinstance(error, PipelineError)
    assert "data.amount > 100" in str(error)


def test_filter_with_a_non_bool_result_is_an_error() -> None:
    errors = Errors()
    pipeline = build([{"filter": "data.amount"}], errors)
    assert pipeline.feed(event({"amount": 1}), T0) == []
    assert [i for i, _, _ in errors.seen] == [0]
    assert "bool" in str(errors.seen[0][1])


def test_map_reshapes_the_data_and_keeps_the_rest() -> None:
    pipeline = build([{"map": "{'id': data.id, 'amount': data.amount * 2}"}])
    source = event({"id": "o-1", "amount": 21, "secret": "x"}, key="k")
    (out,) = pipeline.feed(source, T0)
    assert out.data == {"id": "o-1", "amount": 42}
    assert (out.channel, out.key, out.time) == (source.channel, "k", T0)
    assert pipeline.stateless


def test_map_results_are_plain_json() -> None:
    pipeline = build(
        [
            {
                "map": "{'at': time, 'raw': b'hi', 'took': duration('1.5s'),"
                " 'n': [1, 2.5, null, true], 1: 'one'}"
            }
        ]
    )
    (out,) = pipeline.feed(event({}), T0)
    assert out.data == {
        "at": "2023-11-14T22:13:20Z",
        "raw": "aGk=",
        "took": "1.5s",
        "n": [1, 2.5, None, True],
        "1": "one",
    }
    assert json.loads(json.dumps(out.data)) == out.data


def test_map_to_a_scalar() -> None:
    pipeline = build([{"map": "data.name"}])
    assert datas(pipeline.feed(event({"name": "ada"}), T0)) == ["ada"]


def test_steps_run_in_order_and_errors_name_their_step() -> None:
    errors = Errors()
    pipeline = build(
        [
            {"map": "{'total': data.amount}"},
            {"filter": "data.total > 10"},
            {"map": "{'t': data.total, 'x': data.total / 0}"},
        ],
        errors,
    )
    assert pipeline.feed(event({"amount": 5}), T0) == []
    assert pipeline.feed(event({"amount": 50}), T0) == []  # division by zero in step 2
    assert pipeline.feed(event({"other": 1}), T0) == []  # missing field in step 0
    assert [i for i, _, _ in errors.seen] == [2, 0]
    assert errors.seen[0][2].data == {"total": 50}  # the event as that step saw it


@pytest.mark.parametrize(
    ("steps", "stateless"),
    [
        ([{"filter": "true"}, {"map": "data"}], True),
        ([{"dedupe": {"key": "data.id", "within": "1m"}}], False),
        ([{"sample": {"max": 1, "per": "1s"}}], False),
        ([{"window": {"tumbling": "10s", "aggregate": {"n": "count()"}}}], False),
    ],
)
def test_stateless_only_without_stateful_steps(
    steps: list[dict[str, object]], stateless: bool
) -> None:
    assert build(steps).stateless is stateless


# --- window ------------------------------------------------------------------------------

ALL_FIVE = {
    "orders": "count()",
    "total": "sum(data.amount)",
    "mean": "avg(data.amount)",
    "low": "min(data.amount)",
    "high": "max(data.amount)",
}


def test_tumbling_window_groups_with_all_five_aggregates() -> None:
    pipeline = build(
        [{"window": {"tumbling": "10s", "group_by": "data.region", "aggregate": ALL_FIVE}}]
    )
    for offset, region, amount in [(1, "eu", 10), (2, "us", 7), (3, "eu", 30), (9.5, "eu", 20)]:
        assert pipeline.feed(event({"region": region, "amount": amount}), T0 + offset) == []
    assert pipeline.next_deadline() == T0 + 10
    assert pipeline.flush(T0 + 9.999) == []
    out = pipeline.flush(T0 + 10)
    assert datas(out) == [
        {
            "group": "eu",
            "window_start": "2023-11-14T22:13:20Z",
            "window_end": "2023-11-14T22:13:30Z",
            "orders": 3,
            "total": 60,
            "mean": 20.0,
            "low": 10,
            "high": 30,
        },
        {
            "group": "us",
            "window_start": "2023-11-14T22:13:20Z",
            "window_end": "2023-11-14T22:13:30Z",
            "orders": 1,
            "total": 7,
            "mean": 7.0,
            "low": 7,
            "high": 7,
        },
    ]
    assert isinstance(out[0].data["total"], int)
    assert [(e.channel, e.key, e.time) for e in out] == [("orders.created", None, T0 + 10)] * 2
    assert pipeline.flush(T0 + 20) == []  # emitted once; the next window is empty
    assert pipeline.next_deadline() is None


def test_window_groups_come_in_order_of_first_appearance_and_keep_json_values() -> None:
    pipeline = build(
        [{"window": {"tumbling": "1m", "group_by": "data.g", "aggregate": {"n": "count()"}}}]
    )
    for g in ["b", {"x": [1]}, "a", 1, "b", True, {"x": [1]}, 1.5]:
        pipeline.feed(event({"g": g}), T0 + 5)
    out = datas(pipeline.flush(T0 + 60))
    assert [(d["group"], d["n"]) for d in out] == [
        ("b", 2),
        ({"x": [1]}, 2),
        ("a", 1),
        (1, 1),
        (True, 1),
        (1.5, 1),
    ]
    assert out[0]["window_start"] == "2023-11-14T22:13:00Z"  # aligned to whole minutes
    assert out[0]["window_end"] == "2023-11-14T22:14:00Z"


def test_window_without_group_by_has_no_group_key() -> None:
    pipeline = build(
        [{"window": {"tumbling": "10s", "aggregate": {"n": "count()", "s": "sum(data.v)"}}}]
    )
    pipeline.feed(event({"v": 1.5}), T0)
    pipeline.feed(event({"v": 2}), T0 + 1)
    assert datas(pipeline.flush(T0 + 10)) == [
        {
            "window_start": "2023-11-14T22:13:20Z",
            "window_end": "2023-11-14T22:13:30Z",
            "n": 2,
            "s": 3.5,
        }
    ]


def test_feeding_past_a_window_end_emits_the_closed_window_first() -> None:
    pipeline = build([{"window": {"tumbling": "10s", "aggregate": {"n": "count()"}}}])
    pipeline.feed(event({}), T0 + 1)
    pipeline.feed(event({}), T0 + 2)
    out = pipeline.feed(event({}), T0 + 25)  # the first window closed meanwhile
    assert [(d["window_end"], d["n"]) for d in datas(out)] == [("2023-11-14T22:13:30Z", 2)]
    assert pipeline.next_deadline() == T0 + 30
    assert [d["n"] for d in datas(pipeline.flush(T0 + 30))] == [1]


def test_sliding_window_emits_overlapping_windows() -> None:
    pipeline = build(
        [
            {
                "window": {
                    "sliding": "30s",
                    "every": "10s",
                    "aggregate": {"n": "count()", "s": "sum(data.v)"},
                }
            }
        ]
    )
    emitted = []
    for offset, v in [(5, 1), (15, 10), (16, 100)]:
        emitted += pipeline.feed(event({"v": v}), T0 + offset)
    while (deadline := pipeline.next_deadline()) is not None:
        emitted += pipeline.flush(deadline)
    assert [(d["window_start"], d["window_end"], d["n"], d["s"]) for d in datas(emitted)] == [
        ("2023-11-14T22:13:00Z", "2023-11-14T22:13:30Z", 1, 1),
        ("2023-11-14T22:13:10Z", "2023-11-14T22:13:40Z", 3, 111),
        ("2023-11-14T22:13:20Z", "2023-11-14T22:13:50Z", 3, 111),
        ("2023-11-14T22:13:30Z", "2023-11-14T22:14:00Z", 2, 110),
    ]
    assert [e.time for e in emitted] == [T0 + 10, T0 + 20, T0 + 30, T0 + 40]


def test_sliding_window_flushed_late_emits_every_tick_at_once() -> None:
    pipeline = build(
        [
            {
                "window": {
                    "sliding": "20s",
                    "every": "10s",
                    "group_by": "data.g",
                    "aggregate": {"n": "count()"},
                }
            }
        ]
    )
    pipeline.feed(event({"g": "a"}), T0 + 1)
    pipeline.feed(event({"g": "b"}), T0 + 5)
    pipeline.feed(event({"g": "b"}), T0 + 9)
    pipeline.flush(T0 + 5)  # nothing ended yet
    out = datas(pipeline.flush(T0 + 1000))
    assert [(d["window_end"][11:19], d["group"], d["n"]) for d in out] == [
        ("22:13:30", "a", 1),
        ("22:13:30", "b", 2),
        ("22:13:40", "a", 1),
        ("22:13:40", "b", 2),
    ]
    assert pipeline.next_deadline() is None
    assert pipeline.flush(T0 + 2000) == []


def test_failing_aggregate_argument_skips_the_event_entirely() -> None:
    errors = Errors()
    pipeline = build(
        [{"window": {"tumbling": "10s", "aggregate": {"n": "count()", "s": "sum(data.amount)"}}}],
        errors,
    )
    pipeline.feed(event({"amount": 5}), T0)
    bad_missing, bad_type = event({"other": 1}), event({"amount": "lots"})
    assert pipeline.feed(bad_missing, T0 + 1) == []
    assert pipeline.feed(bad_type, T0 + 2) == []
    assert [(i, e) for i, _, e in errors.seen] == [(0, bad_missing), (0, bad_type)]
    assert [(d["n"], d["s"]) for d in datas(pipeline.flush(T0 + 10))] == [(1, 5)]


def test_failing_feed_keeps_closed_windows_for_the_next_flush() -> None:
    errors = Errors()
    pipeline = build([{"window": {"tumbling": "10s", "aggregate": {"m": "max(data.v)"}}}], errors)
    pipeline.feed(event({"v": 3}), T0)
    assert pipeline.feed(event({}), T0 + 15) == []  # fails; nothing is lost
    assert len(errors.seen) == 1
    assert [d["m"] for d in datas(pipeline.flush(T0 + 15))] == [3]


def test_steps_after_a_window_apply_to_its_outputs() -> None:
    errors = Errors()
    pipeline = build(
        [
            {
                "window": {
                    "tumbling": "10s",
                    "group_by": "data.region",
                    "aggregate": {"total": "sum(data.amount)"},
                }
            },
            {"filter": "data.total > 100"},
            {"map": "{'region': data.group, 'total': data.total}"},
        ],
        errors,
    )
    for region, amount in [("eu", 80), ("eu", 40), ("us", 90)]:
        pipeline.feed(event({"region": region, "amount": amount}), T0 + 1)
    assert datas(pipeline.flush(T0 + 10)) == [{"region": "eu", "total": 120}]
    pipeline.feed(event({"region": "us", "amount": 500}), T0 + 11)
    assert datas(pipeline.feed(event({"region": "eu", "amount": 1}), T0 + 21)) == [
        {"region": "us", "total": 500}
    ]  # closed by feed, then filtered and mapped
    assert errors.seen == []


def test_a_window_after_a_window_sees_the_first_ones_outputs() -> None:
    pipeline = build(
        [
            {"window": {"tumbling": "10s", "aggregate": {"n": "count()"}}},
            {
                "window": {
                    "tumbling": "1m",
                    "aggregate": {"windows": "count()", "events": "sum(data.n)"},
                }
            },
        ]
    )
    for offset in [1, 2, 12, 25]:
        assert pipeline.feed(event({}), T0 + offset) == []
    assert pipeline.next_deadline() == T0 + 30  # the second 10 s window went on already
    assert pipeline.flush(T0 + 30) == []  # three 10 s windows went into the 1 m window
    assert pipeline.next_deadline() == T0 + 40  # end of the minute 22:13:00-22:14:00
    assert [(d["windows"], d["events"]) for d in datas(pipeline.flush(T0 + 40))] == [(3, 4)]


def test_next_deadline_is_the_earliest_window_end() -> None:
    pipeline = build(
        [
            {"filter": "true"},
            {"window": {"sliding": "1m", "every": "15s", "aggregate": {"n": "count()"}}},
        ]
    )
    assert pipeline.next_deadline() is None
    pipeline.feed(event({}), T0 + 1)  # the 15 s pane 22:13:15-22:13:30
    assert pipeline.next_deadline() == T0 + 10
    pipeline.flush(T0 + 10)
    assert pipeline.next_deadline() == T0 + 25
    for _ in range(3):
        pipeline.flush(pipeline.next_deadline() or 0)
    assert pipeline.next_deadline() is None
    assert build([{"dedupe": {"key": "data.id", "within": "1m"}}]).next_deadline() is None


@given(
    st.lists(st.floats(min_value=0, max_value=3600, allow_nan=False), max_size=60),
    st.sampled_from(["100ms", "300ms", "1s", "7s", "10s", "1m"]),
)
def test_tumbling_counts_add_up_to_the_events_fed(offsets: list[float], size: str) -> None:
    pipeline = build(
        [{"window": {"tumbling": size, "group_by": "data.g", "aggregate": {"n": "count()"}}}]
    )
    out = []
    for i, offset in enumerate(sorted(offsets)):
        out += pipeline.feed(event({"g": i % 3}), T0 + offset)
    while (deadline := pipeline.next_deadline()) is not None:
        closed = pipeline.flush(deadline)
        assert closed, "a deadline is a window end with events"
        assert all(e.time == deadline for e in closed)
        out += closed
    assert sum(d["n"] for d in datas(out)) == len(offsets)
    assert all(e.time > T0 for e in out)
    ends = [e.time for e in out]
    assert ends == sorted(ends)


@given(st.lists(st.floats(min_value=0, max_value=600, allow_nan=False), max_size=40))
def test_sliding_windows_count_each_event_once_per_overlapping_window(offsets: list[float]) -> None:
    pipeline = build(
        [{"window": {"sliding": "30s", "every": "10s", "aggregate": {"n": "count()"}}}]
    )
    out = []
    for offset in sorted(offsets):
        out += pipeline.feed(event({}), T0 + offset)
    out += pipeline.flush(T0 + 1000)
    assert sum(d["n"] for d in datas(out)) == 3 * len(offsets)


# --- dedupe ------------------------------------------------------------------------------


def test_dedupe_drops_repeats_within_and_passes_after_expiry() -> None:
    pipeline = build([{"dedupe": {"key": "data.id", "within": "5m"}}])
    first = event({"id": 1, "v": "a"})
    assert pipeline.feed(first, T0) == [first]
    assert pipeline.feed(event({"id": 1, "v": "b"}), T0 + 60) == []
    assert len(pipeline.feed(event({"id": 2}), T0 + 61)) == 1
    assert pipeline.feed(event({"id": 1}), T0 + 299.9) == []
    assert datas(pipeline.feed(event({"id": 1, "v": "c"}), T0 + 300)) == [{"id": 1, "v": "c"}]
    assert pipeline.feed(event({"id": 1}), T0 + 301) == []  # counted again from T0 + 300


def test_dedupe_keys_distinguish_types_and_structures() -> None:
    pipeline = build([{"dedupe": {"key": "data.k", "within": "1m"}}])
    keys: list[object] = [1, 1.5, "1", True, [1], {"a": 1}, None]
    assert all(len(pipeline.feed(event({"k": k}), T0)) == 1 for k in keys)
    assert all(pipeline.feed(event({"k": k}), T0 + 1) == [] for k in keys)


def test_dedupe_key_error_reports_and_skips() -> None:
    errors = Errors()
    pipeline = build([{"map": "data"}, {"dedupe": {"key": "data.id", "within": "1m"}}], errors)
    assert pipeline.feed(event({}), T0) == []
    assert [i for i, _, _ in errors.seen] == [1]


def test_dedupe_memory_is_bounded() -> None:
    dedupe = Dedupe(compile_expression("data.id"), 10.0, max_keys=50)
    for i in range(200):
        dedupe.feed(event({"id": i}), T0 + i * 0.01)
    assert len(dedupe) == 50
    assert dedupe.feed(event({"id": 199}), T0 + 3) == []
    dedupe.flush(T0 + 20)
    assert len(dedupe) == 0


# --- sample ------------------------------------------------------------------------------


def test_sample_lets_max_per_period_through() -> None:
    pipeline = build([{"sample": {"max": 2, "per": "1s"}}])
    passed = [len(pipeline.feed(event({"i": i}), T0 + i * 0.2)) for i in range(10)]
    # periods [T0, T0+1) and [T0+1, T0+2): two events each
    assert passed == [1, 1, 0, 0, 0, 1, 1, 0, 0, 0]


def test_sample_per_group() -> None:
    pipeline = build([{"sample": {"max": 1, "per": "10s", "group_by": "data.sensor"}}])
    sent = [("a", 0), ("a", 1), ("b", 2), ("b", 3), ("a", 9), ("a", 10), ("b", 12)]
    out = []
    for sensor, offset in sent:
        out += pipeline.feed(event({"sensor": sensor, "at": offset}), T0 + offset)
    assert [(d["sensor"], d["at"]) for d in datas(out)] == [
        ("a", 0),
        ("b", 2),
        ("a", 10),
        ("b", 12),
    ]


def test_sample_memory_holds_only_the_current_period() -> None:
    sample = Sample(1, 1.0, compile_expression("data.g"))
    for g in range(100):
        sample.feed(event({"g": g}), T0)
    assert len(sample) == 100
    assert len(sample.feed(event({"g": 5}), T0 + 1)) == 1
    assert len(sample) == 1


# --- values --------------------------------------------------------------------------------


def test_period_index_counts_exact_multiples_as_the_next_period() -> None:
    assert period_index(T0 + 0.3, 0.1) == period_index(T0, 0.1) + 3
    assert period_index(3 * 0.1, 0.1) == 3
    assert period_index(T0 + 9.999, 10.0) == period_index(T0, 10.0)
    assert period_index(-1.0, 10.0) == -1


def test_sub_second_windows_have_exact_bounds() -> None:
    pipeline = build([{"window": {"tumbling": "100ms", "aggregate": {"n": "count()"}}}])
    pipeline.feed(event({}), T0 + 0.25)
    deadline = pipeline.next_deadline()
    assert deadline == pytest.approx(T0 + 0.3)
    assert datas(pipeline.flush(T0 + 0.3)) == [
        {
            "window_start": "2023-11-14T22:13:20.200000Z",
            "window_end": "2023-11-14T22:13:20.300000Z",
            "n": 1,
        }
    ]


def test_the_windows_holding_a_moment_are_those_its_pane_ends_or_follows() -> None:
    assert windows_holding(25.0, 10.0, 1) == [(20.0, 30.0)]
    assert windows_holding(25.0, 10.0, 3) == [(0.0, 30.0), (10.0, 40.0), (20.0, 50.0)]
    assert windows_holding(30.0, 10.0, 1) == [(30.0, 40.0)], "an end belongs to the next"
