"""Change envelopes (CONTRACT §7b): wal2json decoding and cursors (connectors/postgres/changes.py),
unwrap, mask and Debezium JSON (pipelines/cdc.py)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.changes import format_lsn, parse_lsn
from bridge.errors import PipelineError
from connectors.postgres.changes import (
    Change,
    Commit,
    Decoder,
    boundary_cursor,
    format_cursor,
    is_after,
    parse_cursor,
)
from pipelines.cdc import from_debezium, mask, unwrap

# --- LSNs and cursors --------------------------------------------------------------------


def test_lsn_text_round_trips() -> None:
    assert parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert format_lsn(parse_lsn("16/B374D848")) == "16/B374D848"
    assert format_lsn(0) == "0/0"
    with pytest.raises(ValueError):
        parse_lsn("nope")


def test_cursors_sort_as_strings_in_stream_order() -> None:
    ordered = [
        format_cursor(0x100, 0x10, 0),
        format_cursor(0x100, 0x10, 1),
        format_cursor(0x100, 0x20, 0),
        format_cursor(0x1_0000_0000, 0x5, 0),  # a later commit, whatever its change LSNs
    ]
    assert sorted(ordered) == ordered
    assert [parse_cursor(c) for c in ordered[:1]] == [(0x100, 0x10, 0)]
    assert parse_cursor("k1:0=1") is None
    assert parse_cursor("pg1:zz") is None


POSITIONS = st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.integers(0, 0xFFFF))


@given(POSITIONS, POSITIONS)
def test_cursor_strings_order_as_their_positions(
    a: tuple[int, int, int], b: tuple[int, int, int]
) -> None:
    ca, cb = format_cursor(*a), format_cursor(*b)
    assert parse_cursor(ca) == a
    assert (ca < cb) == (a < b)
    assert is_after(ca, cb) == (a > b)


@given(st.integers(1, 2**64 - 1), POSITIONS)
def test_a_boundary_is_after_exactly_the_earlier_commits(
    lsn: int, position: tuple[int, int, int]
) -> None:
    assert is_after(format_cursor(*position), boundary_cursor(lsn)) == (position[0] >= lsn)


def test_a_boundary_splits_changes_by_commit_lsn() -> None:
    boundary = boundary_cursor(0x200)
    assert not is_after(format_cursor(0x1FF, 0x1FF, 0xFFFF), boundary)
    assert is_after(format_cursor(0x200, 0x150, 0), boundary)
    assert is_after(format_cursor(0x300, 0x300, 0), boundary)
    assert boundary < format_cursor(0x200, 0, 0)  # as strings too
    with pytest.raises(ValueError):
        is_after("1:2", boundary)


# --- wal2json decoding -------------------------------------------------------------------

BEGIN = {
    "action": "B",
    "timestamp": "2024-01-02 03:04:05.5+00",
    "lsn": "0/2000",
    "nextlsn": "0/2030",
}
COMMIT = {
    "action": "C",
    "timestamp": "2024-01-02 03:04:05.5+00",
    "lsn": "0/2000",
    "nextlsn": "0/2030",
}
PK = [{"name": "id", "type": "integer"}]


def _columns(**values: tuple[str, Any]) -> list[dict[str, Any]]:
    return [{"name": k, "type": t, "value": v} for k, (t, v) in values.items()]


def _decode(*messages: dict[str, Any]) -> list[Change | Commit]:
    decoder = Decoder("app")
    out: list[Change | Commit] = []
    for message in messages:
        lsn = "0/2030" if message["action"] == "C" else message.get("lsn", "0/1000")
        out += decoder.feed(lsn, "733", json.dumps(message))
    return out


def test_insert_update_delete_become_c_u_d_envelopes() -> None:
    insert = {
        "action": "I",
        "lsn": "0/1000",
        "schema": "public",
        "table": "orders",
        "columns": _columns(id=("integer", 1), amount=("numeric(10,2)", 0), note=("text", None)),
        "pk": PK,
    }
    # wal2json writes numeric literally: 12.50 must stay exact, hence a raw JSON text here
    raw_insert = json.dumps(insert).replace('"value": 0', '"value": 12.50')
    update = {
        "action": "U",
        "lsn": "0/1100",
        "schema": "public",
        "table": "orders",
        "columns": _columns(id=("integer", 1), amount=("numeric(10,2)", "1"), note=("text", "x")),
        "identity": _columns(id=("integer", 1)),
        "pk": PK,
    }
    delete = {
        "action": "D",
        "lsn": "0/1200",
        "schema": "public",
        "table": "orders",
        "identity": _columns(id=("integer", 1)),
        "pk": PK,
    }
    decoder = Decoder("app")
    items = list(decoder.feed("0/0F00", "733", json.dumps(BEGIN)))
    items += decoder.feed("0/1000", "733", raw_insert)
    for message in (update, delete, COMMIT):
        items += decoder.feed("0/2030", "733", json.dumps(message))
    *changes, commit = items
    assert commit == Commit(parse_lsn("0/2030"))
    assert all(isinstance(c, Change) for c in changes)
    c, u, d = (ch for ch in changes if isinstance(ch, Change))
    source = {
        "db": "app",
        "schema": "public",
        "table": "orders",
        "ts_ms": 1704164645500,
        "txId": 733,
    }
    assert c.envelope == {
        "op": "c",
        "before": None,
        "after": {"id": 1, "amount": "12.50", "note": None},
        "source": {**source, "lsn": "0/1000"},
    }
    assert u.envelope["op"] == "u"
    assert u.envelope["before"] == {"id": 1}
    assert u.envelope["after"] == {"id": 1, "amount": "1", "note": "x"}
    assert d.envelope == {
        "op": "d",
        "before": {"id": 1},
        "after": None,
        "source": {**source, "lsn": "0/1200"},
    }
    assert [ch.key for ch in (c, u, d)] == [{"id": 1}] * 3
    assert c.qualified == "public.orders"
    assert c.time == 1704164645.5
    cursors = [ch.cursor for ch in (c, u, d)]
    assert cursors == sorted(cursors)
    assert {parse_cursor(x)[0] for x in cursors if parse_cursor(x)} == {parse_lsn("0/2000")}


def test_rows_of_one_wal_record_get_increasing_indexes() -> None:
    row = {"action": "I", "lsn": "0/1000", "schema": "s", "table": "t", "columns": []}
    changes = [i for i in _decode(BEGIN, row, row, COMMIT) if isinstance(i, Change)]
    assert [parse_cursor(c.cursor) for c in changes] == [
        (0x2000, 0x1000, 0),
        (0x2000, 0x1000, 1),
    ]


def test_truncate_and_messages() -> None:
    truncate = {"action": "T", "lsn": "0/1000", "schema": "s", "table": "t"}
    message = {"action": "M", "lsn": "0/1000", "transactional": True, "prefix": "p", "content": "x"}
    items = _decode(BEGIN, truncate, message, COMMIT)
    (change,) = (i for i in items if isinstance(i, Change))
    assert change.envelope["op"] == "t"
    assert (change.envelope["before"], change.envelope["after"], change.key) == (None, None, None)


def test_a_change_outside_a_transaction_is_an_error() -> None:
    with pytest.raises(ValueError):
        _decode({"action": "I", "lsn": "0/1", "schema": "s", "table": "t", "columns": []})


# --- unwrap and mask ---------------------------------------------------------------------

SOURCE = {"db": "app", "schema": "public", "table": "users", "lsn": "0/1", "ts_ms": 1}
CREATED = {"op": "c", "before": None, "after": {"id": 1, "email": "a@x"}, "source": SOURCE}
DELETED = {"op": "d", "before": {"id": 1, "email": "a@x"}, "after": None, "source": SOURCE}


def test_unwrap() -> None:
    assert unwrap(CREATED) == ({"id": 1, "email": "a@x"}, None)
    assert unwrap({**CREATED, "op": "r"}) == ({"id": 1, "email": "a@x"}, None)
    assert unwrap(DELETED) == ({"id": 1, "email": "a@x"}, "delete")
    assert unwrap({"op": "t", "before": None, "after": None, "source": SOURCE}) == (
        None,
        "truncate",
    )
    assert unwrap({"plain": 1}) == ({"plain": 1}, None)
    assert unwrap("text") == ("text", None)


def test_mask_nulls_columns_in_before_and_after_without_changing_the_input() -> None:
    update = {"op": "u", "before": {"id": 1, "email": "old"}, "after": {"id": 1, "email": "new"}}
    update["source"] = SOURCE
    masked = mask(update, ["email"])
    assert masked["before"] == {"id": 1, "email": None}
    assert masked["after"] == {"id": 1, "email": None}
    assert masked["source"] == SOURCE
    assert update["after"] == {"id": 1, "email": "new"}
    assert mask(CREATED, ["email"])["before"] is None
    assert mask(CREATED, ["phone"]) == CREATED
    assert mask(CREATED, []) is CREATED


def test_mask_of_an_unwrapped_row() -> None:
    assert mask({"id": 1, "email": "a@x"}, {"email"}, row=True) == {"id": 1, "email": None}
    assert mask({"id": 1}, {"email"}, row=True) == {"id": 1}
    assert mask(None, {"email"}, row=True) is None
    assert mask({"not": "an envelope"}, {"not"}) == {"not": "an envelope"}


# --- Debezium JSON -----------------------------------------------------------------------

DEBEZIUM_PAYLOAD: dict[str, Any] = {
    "before": None,
    "after": {
        "id": 1,
        "amount": base64.b64encode((1250).to_bytes(2, "big", signed=True)).decode(),
        "created": 1704164645500000,
        "day": 19724,
        "doc": '{"a": [1, 2]}',
        "at": "2024-01-02T03:04:05.5Z",
        "tags": ["a"],
        "raw": "AP8=",
    },
    "source": {
        "version": "2.5.0.Final",
        "connector": "postgresql",
        "name": "dbserver1",
        "ts_ms": 1704164645500,
        "snapshot": "false",
        "db": "app",
        "schema": "public",
        "table": "orders",
        "txId": 733,
        "lsn": 0x16B374D848,
        "xmin": None,
    },
    "op": "c",
    "ts_ms": 1704164645600,
}
ROW_FIELDS = [
    {"type": "int32", "optional": False, "field": "id"},
    {
        "type": "bytes",
        "name": "org.apache.kafka.connect.data.Decimal",
        "parameters": {"scale": "2", "connect.decimal.precision": "10"},
        "field": "amount",
    },
    {"type": "int64", "name": "io.debezium.time.MicroTimestamp", "field": "created"},
    {"type": "int32", "name": "io.debezium.time.Date", "field": "day"},
    {"type": "string", "name": "io.debezium.data.Json", "field": "doc"},
    {"type": "string", "name": "io.debezium.time.ZonedTimestamp", "field": "at"},
    {"type": "array", "items": {"type": "string"}, "field": "tags"},
    {"type": "bytes", "field": "raw"},
]
DEBEZIUM_SCHEMA = {
    "type": "struct",
    "name": "dbserver1.public.orders.Envelope",
    "fields": [
        {"type": "struct", "fields": ROW_FIELDS, "optional": True, "field": "before"},
        {"type": "struct", "fields": ROW_FIELDS, "optional": True, "field": "after"},
        {"type": "struct", "fields": [], "field": "source"},
        {"type": "string", "field": "op"},
    ],
}
EXPECTED_SOURCE = {
    "db": "app",
    "schema": "public",
    "table": "orders",
    "lsn": "16/B374D848",
    "ts_ms": 1704164645500,
    "txId": 733,
}


def test_debezium_with_the_schema_part_gives_the_connector_forms() -> None:
    converted = from_debezium({"schema": DEBEZIUM_SCHEMA, "payload": DEBEZIUM_PAYLOAD})
    assert converted == {
        "op": "c",
        "before": None,
        "after": {
            "id": 1,
            "amount": "12.50",
            "created": "2024-01-02T03:04:05.5",
            "day": "2024-01-02",
            "doc": {"a": [1, 2]},
            "at": "2024-01-02T03:04:05.5+00:00",
            "tags": ["a"],
            "raw": "AP8=",
        },
        "source": EXPECTED_SOURCE,
    }


def test_debezium_without_the_schema_part_keeps_values_as_sent() -> None:
    converted = from_debezium(DEBEZIUM_PAYLOAD)
    assert converted is not None
    assert converted["after"] == DEBEZIUM_PAYLOAD["after"]
    assert converted["source"] == EXPECTED_SOURCE


def test_debezium_deletes_unwrap_and_mask_like_the_connector() -> None:
    payload = {**DEBEZIUM_PAYLOAD, "op": "d", "before": {"id": 1, "email": "a@x"}, "after": None}
    envelope = from_debezium(payload)
    assert unwrap(mask(envelope, ["email"])) == ({"id": 1, "email": None}, "delete")


def test_debezium_tombstones_are_skipped_and_other_data_is_an_error() -> None:
    assert from_debezium(None) is None
    assert from_debezium({"schema": None, "payload": None}) is None
    for bad in ("text", {"op": "x"}, {"id": 1}, {"op": "c", "after": [1], "source": {}}):
        with pytest.raises(PipelineError):
            from_debezium(bad)


def test_debezium_time_and_decimal_variants() -> None:
    fields = [
        {"type": "int64", "name": "io.debezium.time.Timestamp", "field": "ms"},
        {"type": "int64", "name": "io.debezium.time.NanoTimestamp", "field": "ns"},
        {"type": "int64", "name": "io.debezium.time.MicroTime", "field": "t"},
        {"type": "struct", "name": "io.debezium.data.VariableScaleDecimal", "field": "v"},
        {"type": "bytes", "name": "org.apache.kafka.connect.data.Decimal", "field": "bad"},
    ]
    schema = {"fields": [{"field": "after", "fields": fields}]}
    payload = {
        "op": "u",
        "before": None,
        "after": {
            "ms": 1704164645000,
            "ns": 1704164645000000001,
            "t": 36672500000,
            "v": {"scale": 3, "value": base64.b64encode(b"\xff").decode()},
            "bad": 5,
        },
        "source": {},
    }
    converted = from_debezium({"schema": schema, "payload": payload})
    assert converted is not None
    assert converted["after"] == {
        "ms": "2024-01-02T03:04:05",
        "ns": "2024-01-02T03:04:05",
        "t": "10:11:12.5",
        "v": "-0.001",
        "bad": 5,
    }
