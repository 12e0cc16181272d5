"""AMQP topic-exchange binding patterns, as the connector matches its own publishes."""

from __future__ import annotations

import pytest

from connectors.amqp import binding_matcher


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("orders.eu", "orders.eu", True),
        ("orders.eu", "orders.us", False),
        ("orders.*", "orders.eu", True),
        ("orders.*", "orders.eu.paid", False),
        ("orders.#", "orders", True),
        ("orders.#", "orders.eu.paid", True),
        ("#", "anything.at.all", True),
        ("a.#.c", "a.c", True),
        ("a.#.c", "a.b.d.c", True),
        ("a.#.c", "a.b.d", False),
        ("*.created", "orders.created", True),
        ("*.created", "created", False),
    ],
)
def test_topic_exchange_semantics(pattern: str, key: str, matches: bool) -> None:
    assert binding_matcher(pattern)(key) is matches
