"""The JSON mapping of PostgreSQL column values (connectors/postgres/values.py, CONTRACT §7b)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.postgres.values import ArrayLiteralError, base_type, parse_array, to_json


@pytest.mark.parametrize(
    ("type_name", "value", "expected"),
    [
        # numbers: integers exact, numeric as an exact string, floats as numbers
        ("integer", 7, 7),
        ("integer", "7", 7),
        ("bigint", 9007199254740993, 9007199254740993),
        ("bigint", "9007199254740993", 9007199254740993),
        ("smallint", "-3", -3),
        ("numeric(10,2)", Decimal("12.50"), "12.50"),
        ("numeric(10,2)", "12.50", "12.50"),
        ("numeric", Decimal("0.0000001"), "0.0000001"),
        ("numeric", Decimal("100000000000000000000"), "100000000000000000000"),
        ("numeric", "NaN", None),
        ("real", Decimal("1.5"), 1.5),
        ("real", "1.5", 1.5),
        ("double precision", "NaN", None),
        ("double precision", "-Infinity", None),
        ("double precision", 3, 3.0),
        # booleans, from wal2json and from text
        ("boolean", True, True),
        ("boolean", "t", True),
        ("boolean", "f", False),
        # times in ISO 8601
        ("timestamp with time zone", "2024-01-02 03:04:05.5+00", "2024-01-02T03:04:05.5+00:00"),
        ("timestamp(3) with time zone", "2024-01-02 03:04:05+05:30", "2024-01-02T03:04:05+05:30"),
        ("timestamp without time zone", "2024-01-02 03:04:05.123", "2024-01-02T03:04:05.123"),
        ("timestamp without time zone", "infinity", "infinity"),
        ("timestamp with time zone", "0044-03-15 12:00:00+00 BC", "0044-03-15 12:00:00+00 BC"),
        ("date", "2024-01-02", "2024-01-02"),
        ("time without time zone", "10:11:12", "10:11:12"),
        ("time with time zone", "10:11:12+02", "10:11:12+02:00"),
        ("interval", "P1DT2H", "P1DT2H"),
        # bytes and JSON
        ("bytea", "00ff", "AP8="),
        ("bytea", "\\x00ff", "AP8="),
        ("bytea", "", ""),
        ("jsonb", '{"a": [1, 2]}', {"a": [1, 2]}),
        ("json", "null", None),
        ("json", '"text"', "text"),
        # NULL and the rest
        ("text", None, None),
        ("jsonb", None, None),
        ("text", 'he"llo', 'he"llo'),
        ("character varying(20)", "x", "x"),
        ("uuid", "e08ab4dc-3dc1-4630-8c16-ac76c54ed27c", "e08ab4dc-3dc1-4630-8c16-ac76c54ed27c"),
        ("mood", "happy", "happy"),
        # arrays
        ("integer[]", "{1,2,3}", [1, 2, 3]),
        ("integer[]", "{{1,2},{3,NULL}}", [[1, 2], [3, None]]),
        ("text[]", '{"a b","c\\"d",NULL,"NULL"}', ["a b", 'c"d', None, "NULL"]),
        ("numeric(4,1)[]", "{1.5,2.0}", ["1.5", "2.0"]),
        ("boolean[]", "{t,f}", [True, False]),
        ("jsonb[]", '{"{\\"a\\": 1}"}', [{"a": 1}]),
        ("bytea[]", '{"\\\\x00ff"}', ["AP8="]),
        ("timestamp with time zone[]", '{"2024-01-02 03:04:05+00"}', ["2024-01-02T03:04:05+00:00"]),
        ("integer[]", "[0:1]={5,6}", [5, 6]),
        ("integer[]", "{}", []),
    ],
)
def test_values_map_to_json(type_name: str, value: Any, expected: Any) -> None:
    assert to_json(type_name, value) == expected


def test_base_type_strips_modifiers_and_array_marks() -> None:
    assert base_type("numeric(10,2)") == ("numeric", False)
    assert base_type("timestamp(3) with time zone[]") == ("timestamp with time zone", True)
    assert base_type("character varying(20)") == ("character varying", False)


@pytest.mark.parametrize("literal", ["1,2", "{1,2", "{1,2}x", '{"a}', "[0:1]"])
def test_malformed_array_literals_raise(literal: str) -> None:
    with pytest.raises(ArrayLiteralError):
        parse_array(literal)


def _literal(items: list[str | None]) -> str:
    def quote(item: str | None) -> str:
        if item is None:
            return "NULL"
        return '"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"'

    return "{" + ",".join(quote(i) for i in items) + "}"


@given(st.lists(st.one_of(st.none(), st.text())))
def test_quoted_array_literals_round_trip(items: list[str | None]) -> None:
    assert parse_array(_literal(items)) == items
