"""Access policy (CONTRACT §4): the order of the checks, scope grants, tier limits."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.errors import (
    AccessDenied,
    ApiBlocked,
    InsufficientScope,
    NotSubscribed,
    Throttled,
    TooManyConnections,
    Unauthenticated,
    UnknownResource,
    WrongProtocol,
)
from bridge.policy import (
    ConnectionCounter,
    FailedAttempts,
    Grant,
    RollingWindow,
    SubscriptionState,
    authorize,
    grant_scopes,
    has_required_scopes,
)

GRANT = Grant("dashboard", frozenset({"orders:read"}), 2_000_000_000.0, "streambridge")
SUBSCRIBED = SubscriptionState("dashboard", "Orders", "1.0.0", "Gold")
BLOCKED_SUBSCRIPTION = SubscriptionState("dashboard", "Orders", "1.0.0", "Gold", blocked=True)


def request(**changes: Any) -> dict[str, Any]:
    """A request that passes every check; each test breaks some of them."""
    allowed: dict[str, Any] = {
        "grant": GRANT,
        "token_error": None,
        "api_state": "PUBLISHED",
        "api_protocol": "sse",
        "topics_found": True,
        "requested_protocol": "sse",
        "subscription": SUBSCRIBED,
        "required_scopes": ["orders:read"],
    }
    return {**allowed, **changes}


def test_a_request_passing_every_row_is_allowed() -> None:
    authorize(**request())


@pytest.mark.parametrize("state", ["PUBLISHED", "DEPRECATED"])
def test_published_and_deprecated_apis_are_served(state: str) -> None:
    authorize(**request(api_state=state))


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"grant": None}, Unauthenticated),
        ({"api_state": None}, UnknownResource),
        ({"api_state": "CREATED"}, UnknownResource),
        ({"api_state": "RETIRED"}, UnknownResource),
        ({"topics_found": False}, UnknownResource),
        ({"requested_protocol": "websocket"}, WrongProtocol),
        ({"subscription": None}, NotSubscribed),
        ({"subscription": BLOCKED_SUBSCRIPTION}, NotSubscribed),
        ({"required_scopes": ["orders:read", "orders:write"]}, InsufficientScope),
        ({"api_state": "BLOCKED"}, ApiBlocked),
    ],
    ids=lambda value: value.__name__ if isinstance(value, type) else None,
)
def test_each_row_of_the_table(changes: dict[str, Any], expected: type[AccessDenied]) -> None:
    with pytest.raises(AccessDenied) as caught:
        authorize(**request(**changes))
    assert type(caught.value) is expected


# Each case breaks several rows at once: the first one in table order must decide.
@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"grant": None, "api_state": None}, Unauthenticated),
        ({"grant": None, "api_state": "BLOCKED", "subscription": None}, Unauthenticated),
        ({"grant": None, "requested_protocol": "websocket"}, Unauthenticated),
        ({"api_state": None, "subscription": None}, UnknownResource),
        ({"api_state": "RETIRED", "requested_protocol": "websocket"}, UnknownResource),
        ({"topics_found": False, "subscription": None, "required_scopes": ["x"]}, UnknownResource),
        ({"requested_protocol": "websocket", "subscription": None}, WrongProtocol),
        ({"requested_protocol": "websub", "required_scopes": ["x"]}, WrongProtocol),
        ({"subscription": None, "required_scopes": ["x"]}, NotSubscribed),
        ({"subscription": BLOCKED_SUBSCRIPTION, "required_scopes": ["x"]}, NotSubscribed),
        ({"subscription": None, "api_state": "BLOCKED"}, NotSubscribed),
        ({"subscription": BLOCKED_SUBSCRIPTION, "api_state": "BLOCKED"}, NotSubscribed),
        ({"required_scopes": ["x"], "api_state": "BLOCKED"}, InsufficientScope),
    ],
)
def test_the_first_failing_row_decides(
    changes: dict[str, Any], expected: type[AccessDenied]
) -> None:
    with pytest.raises(AccessDenied) as caught:
        authorize(**request(**changes))
    assert type(caught.value) is expected


def test_unauthenticated_carries_the_token_error() -> None:
    with pytest.raises(Unauthenticated, match="the token has expired"):
        authorize(**request(grant=None, token_error="the token has expired"))


def test_wrong_protocol_names_the_expected_one() -> None:
    with pytest.raises(WrongProtocol) as caught:
        authorize(**request(api_protocol="websocket", requested_protocol="sse"))
    assert caught.value.expected == "websocket"


def test_insufficient_scope_lists_every_required_scope() -> None:
    with pytest.raises(InsufficientScope) as caught:
        authorize(**request(required_scopes=["orders:read", "orders:write", "pii:read"]))
    assert caught.value.required == frozenset({"orders:read", "orders:write", "pii:read"})
    assert "orders:write" in caught.value.detail
    assert "pii:read" in caught.value.detail
    assert "orders:read" not in caught.value.detail  # held, so not reported missing


def test_topics_without_scopes_need_none() -> None:
    authorize(**request(grant=Grant("c", frozenset(), 0.0, "i"), required_scopes=[]))


def test_has_required_scopes_returns_what_is_missing() -> None:
    assert has_required_scopes(frozenset({"a", "b"}), ["a"]) == frozenset()
    assert has_required_scopes(frozenset({"a"}), ["a", "b", "c"]) == frozenset({"b", "c"})


# --- scope grants (RFC 6749 §3.3) ---------------------------------------------------------


def test_grant_without_request_gives_every_available_scope() -> None:
    assert grant_scopes(None, ["a", "b", "a"]) == frozenset({"a", "b"})


def test_grant_of_a_partial_request_is_the_intersection() -> None:
    assert grant_scopes(["a", "z"], ["a", "b"]) == frozenset({"a"})
    assert grant_scopes(["a", "b"], ["a", "b", "c"]) == frozenset({"a", "b"})


def test_grant_of_nothing_grantable_is_invalid_scope() -> None:
    with pytest.raises(ValueError):
        grant_scopes(["z"], ["a", "b"])
    with pytest.raises(ValueError):
        grant_scopes(["a"], [])


# --- events per minute ---------------------------------------------------------------------


def test_rolling_window_admits_exactly_limit_events() -> None:
    window = RollingWindow(3)
    for now in (0.0, 1.0, 2.0):
        window.acquire(now)
    with pytest.raises(Throttled) as caught:
        window.acquire(2.5)
    # The event of t=0 leaves the window at t=60: 57.5 s from now, rounded up.
    assert caught.value.retry_after == 58


def test_rolling_window_events_expire_after_60_seconds() -> None:
    window = RollingWindow(2)
    window.acquire(0.0)
    window.acquire(30.0)
    with pytest.raises(Throttled):
        window.acquire(59.9)
    window.acquire(60.0)  # t=0 expired
    with pytest.raises(Throttled) as caught:
        window.acquire(60.5)
    assert caught.value.retry_after == 30  # t=30 leaves at t=90
    window.acquire(90.0)


def test_rolling_window_is_rolling_not_fixed() -> None:
    # A fixed per-minute bucket would admit 2 at 59 s and 2 more at 61 s.
    window = RollingWindow(2)
    window.acquire(59.0)
    window.acquire(59.5)
    with pytest.raises(Throttled):
        window.acquire(61.0)


def test_rejected_events_are_not_counted() -> None:
    window = RollingWindow(1)
    window.acquire(0.0)
    for now in range(1, 60):
        with pytest.raises(Throttled):
            window.acquire(float(now))
    window.acquire(60.0)


def test_retry_after_is_at_least_one_second() -> None:
    window = RollingWindow(1)
    window.acquire(0.0)
    with pytest.raises(Throttled) as caught:
        window.acquire(59.99)
    assert caught.value.retry_after == 1


def test_is_empty() -> None:
    window = RollingWindow(5)
    assert window.is_empty(0.0)
    window.acquire(10.0)
    assert not window.is_empty(10.0)
    assert not window.is_empty(69.0)
    assert window.is_empty(70.0)


@given(
    st.integers(1, 5),
    st.lists(st.floats(0, 40, allow_nan=False), min_size=1, max_size=60),
)
def test_never_more_than_limit_in_any_rolling_minute(limit: int, gaps: list[float]) -> None:
    window = RollingWindow(limit)
    accepted: list[float] = []
    now = 0.0
    for gap in gaps:
        now += gap
        in_window = [t for t in accepted if t > now - 60]
        try:
            window.acquire(now)
        except Throttled as exc:
            # Refused only when the window is really full ...
            assert len(in_window) == limit
            # ... and exactly until the oldest one leaves it.
            assert exc.retry_after >= 1
            # (whole seconds, rounded up; 1e-6 absorbs float error at exact seconds)
            assert min(in_window) + 60 - 1e-6 <= now + exc.retry_after <= min(in_window) + 61 + 1e-6
        else:
            assert len(in_window) < limit
            accepted.append(now)
    for t in accepted:
        assert len([u for u in accepted if t - 60 < u <= t]) <= limit


@given(st.integers(1, 5), st.floats(0, 59.9, allow_nan=False))
def test_waiting_retry_after_is_enough(limit: int, spread: float) -> None:
    window = RollingWindow(limit)
    for i in range(limit):
        window.acquire(spread * i / limit)
    now = spread
    with pytest.raises(Throttled) as caught:
        window.acquire(now)
    window.acquire(now + caught.value.retry_after)


# --- connections per subscription ----------------------------------------------------------


KEY = ("dashboard", "Orders", "1.0.0")
OTHER = ("other", "Orders", "1.0.0")


def test_connection_counter_enforces_the_limit() -> None:
    counter = ConnectionCounter()
    counter.open(KEY, 2)
    counter.open(KEY, 2)
    assert counter.count(KEY) == 2
    with pytest.raises(TooManyConnections) as caught:
        counter.open(KEY, 2)
    assert caught.value.retry_after > 0
    assert counter.count(KEY) == 2  # a refused connection is not counted


def test_closing_frees_a_slot() -> None:
    counter = ConnectionCounter()
    counter.open(KEY, 1)
    with pytest.raises(TooManyConnections):
        counter.open(KEY, 1)
    counter.close(KEY)
    assert counter.count(KEY) == 0
    counter.open(KEY, 1)
    assert counter.count(KEY) == 1


def test_subscriptions_are_counted_separately() -> None:
    counter = ConnectionCounter()
    counter.open(KEY, 1)
    counter.open(OTHER, 1)
    assert counter.count(KEY) == counter.count(OTHER) == 1


def test_no_limit_means_unlimited() -> None:
    counter = ConnectionCounter()
    for _ in range(100):
        counter.open(KEY, None)
    assert counter.count(KEY) == 100


def test_closing_more_than_opened_never_goes_negative() -> None:
    counter = ConnectionCounter()
    counter.close(KEY)
    counter.open(KEY, 1)
    counter.close(KEY)
    counter.close(KEY)
    assert counter.count(KEY) == 0
    counter.open(KEY, 1)
    with pytest.raises(TooManyConnections):
        counter.open(KEY, 1)


def test_failed_attempts_lock_a_key_for_the_rest_of_the_window() -> None:
    attempts = FailedAttempts(limit=3, window=60.0)
    for second in range(3):
        assert attempts.retry_after("client:a", float(second)) is None
        attempts.failed("client:a", float(second))
    assert attempts.retry_after("client:a", 10.0) == 50
    assert attempts.retry_after("client:b", 10.0) is None
    assert attempts.retry_after("client:a", 60.5) is None  # the first failure left


def test_failed_attempts_keep_at_most_max_keys() -> None:
    attempts = FailedAttempts(limit=1, window=60.0, max_keys=2)
    for index, key in enumerate(("a", "b", "c")):
        attempts.failed(key, float(index))
    assert attempts.retry_after("a", 3.0) is None  # the quietest key went
    assert attempts.retry_after("c", 3.0) is not None


# --- permits asked for in batches (a stream asks for what it holds) --------------------------


def test_take_grants_what_fits_and_counts_it() -> None:
    window = RollingWindow(5)
    assert window.take(3, 0.0) == 3
    assert window.take(3, 1.0) == 2  # two fit: the stream writes two, then is throttled
    assert window.take(1, 2.0) == 0
    assert window.retry_after(2.0) == 58  # the first three leave at t=60
    assert window.take(4, 60.0) == 3
    assert window.retry_after(60.0) == 1  # the two of t=1 leave at t=61


@given(
    st.integers(1, 8),
    st.lists(st.tuples(st.floats(0, 40, allow_nan=False), st.integers(0, 6)), max_size=40),
)
def test_take_never_grants_more_than_limit_in_any_rolling_minute(
    limit: int, asks: list[tuple[float, int]]
) -> None:
    window = RollingWindow(limit)
    granted: list[float] = []
    now = 0.0
    for gap, wanted in asks:
        now += gap
        room = limit - len([t for t in granted if t > now - 60])
        got = window.take(wanted, now)
        assert got == min(wanted, room)  # exact: as much as fits, never less
        granted += [now] * got
    for t in granted:
        assert len([u for u in granted if t - 60 < u <= t]) <= limit
