"""The cluster log's record rules (connectors/cluster/fence.py), without brokers: a
simulated copier failover must leave the log, as read, with every message once, in order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from connectors.cluster.fence import (
    DIGEST,
    EPOCH,
    SEQUENCE,
    Aligner,
    Fence,
    fingerprint,
    log_topic,
)

Record = dict[str, str]


def record(epoch: int, sequence: int, digest: str = "") -> Record:
    return {EPOCH: str(epoch), SEQUENCE: str(sequence), DIGEST: digest}


def read(log: list[Record]) -> list[str]:
    fence = Fence()
    return [r[DIGEST] for r in log if fence.admit(r)]


def test_markers_repeats_and_a_fenced_copiers_late_appends_are_not_delivered() -> None:
    log = [
        record(1, 0),
        record(1, 1, "a"),
        record(1, 2, "b"),
        record(1, 2, "b"),  # a producer retry's repeat
        record(2, 0),  # the next copier's marker
        record(1, 3, "c"),  # the fenced copier's late append: redelivered to the next
        record(2, 1, "c"),
        {DIGEST: "direct"},  # written straight to the log (memory broker)
    ]
    assert read(log) == ["a", "b", "c", "direct"]


def test_the_aligner_skips_what_the_predecessor_appended_but_did_not_acknowledge() -> None:
    aligner = Aligner(["a", "b", "c", "d"])
    # c and d were appended, then the copier died before acknowledging them.
    assert [aligner.seen(d) for d in ["c", "d", "e", "f"]] == [True, True, False, False]


def test_the_aligner_skips_nothing_when_the_first_message_is_new_or_not_redelivered() -> None:
    fresh = Aligner(["a", "b"])
    assert [fresh.seen(d) for d in ["x", "b"]] == [False, False]
    amqp = Aligner(["a", "b"])
    assert amqp.seen("b", redelivered=False) is False
    assert amqp.seen("b") is False


@given(
    messages=st.integers(min_value=1, max_value=40),
    window=st.integers(min_value=1, max_value=8),
    cuts=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 8), st.booleans()), max_size=4),
)
def test_a_failover_anywhere_leaves_every_message_once_in_order(
    messages: int, window: int, cuts: list[tuple[int, int, bool]]
) -> None:
    """Copier sessions take turns over a source that delivers again, first and in order,
    what was not acknowledged, at most ``window`` messages. A session dies at a cut
    (stop, written, late) after taking up to ``written`` more messages without
    acknowledging them, and with ``late`` one more whose append lands after the next
    session's marker."""
    source = [fingerprint("t", f"m{i}", None, str(i)) for i in range(messages)]
    log: list[Record] = []
    acked = epoch = 0
    late: Record | None = None
    plan = list(cuts)
    while acked < messages:
        epoch += 1
        log.append(record(epoch, 0))
        marker = len(log) - 1
        if late is not None:
            log.append(late)
            late = None
        fence = Fence()
        tail = [r[DIGEST] for r in log[:marker] if fence.admit(r)][-window:]
        aligner = Aligner(tail)
        sequence = 0
        stop, written, lands_late = plan.pop(0) if plan else (messages, 0, False)
        budget = min(written, window - 1)
        i = acked
        while i < messages:
            seen = aligner.seen(source[i])
            if i >= stop:  # dying: taken, not acknowledged
                if budget == 0:
                    if lands_late and not seen and window > 1:
                        late = record(epoch, sequence + 1, source[i])
                    break
                budget -= 1
            if not seen:
                sequence += 1
                log.append(record(epoch, sequence, source[i]))
            i += 1
            if i <= stop:
                acked = i
    assert read(log) == source


def test_log_topics_are_valid_kafka_names_and_tell_channels_apart() -> None:
    a = log_topic("mqtt-main", "sensors/+/temp")
    b = log_topic("mqtt-main", "sensors_+_temp")
    assert a != b
    assert a.startswith("sb.log.mqtt-main.sensors_+_temp.") is False  # + is not allowed
    for topic in (a, b, log_topic("m", "x" * 1000)):
        assert len(topic) <= 249
        assert all(c.isalnum() or c in "._-" for c in topic)
