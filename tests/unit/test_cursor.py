"""Client-facing ids: hub part, connector cursor, both, and what is refused."""

from __future__ import annotations

import pytest

from bridge.cursor import SNAPSHOT_ID, EventId, event_id, parse_event_id


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ab12-7", EventId("ab12", 7, None)),
        ("ab12-7.k1:0=12,1=7", EventId("ab12", 7, "k1:0=12,1=7")),
        (".pg1:00000000016B3748:0", EventId(None, 0, "pg1:00000000016B3748:0")),
        ("ab12-7.e1:3", EventId("ab12", 7, "e1:3")),
    ],
)
def test_ids_parse_into_their_parts(text: str, expected: EventId) -> None:
    assert parse_event_id(text) == expected
    assert str(expected) == text


@pytest.mark.parametrize(
    "text", ["", "nonsense", "AB-1", "ab-", ".", "ab-1.", "ab-1.a b", SNAPSHOT_ID]
)
def test_malformed_ids_are_unknown(text: str) -> None:
    assert parse_event_id(text) is None


def test_an_id_without_hub_part_or_cursor_is_a_snapshot_row() -> None:
    assert event_id(None, 0, None) == SNAPSHOT_ID
    assert event_id("ab", 3, None) == "ab-3"
    assert event_id(None, 0, "c") == ".c"
