"""The ``cluster`` section (CONTRACT §11): its fields, and what spans sections."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.config import parse_config
from bridge.errors import ConfigError, Problem

BROKERS = {
    "kafka-main": {"type": "kafka", "bootstrap": "127.0.0.1:9092"},
    "mqtt-main": {"type": "mqtt", "url": "mqtt://127.0.0.1:1883"},
}


def problems_of(raw: dict[str, Any]) -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, {})
    return caught.value.problems


def test_a_cluster_reads_with_its_defaults() -> None:
    config = parse_config({"brokers": BROKERS, "cluster": {"redis": "redis://127.0.0.1:6379/0"}})
    assert config.cluster is not None
    assert config.cluster.redis == "redis://127.0.0.1:6379/0"
    assert config.cluster.log is None
    assert config.cluster.node_ttl == 10.0
    assert config.cluster.on_redis_down == "local"


def test_without_cluster_there_is_none() -> None:
    assert parse_config({}).cluster is None


def test_a_full_cluster_validates() -> None:
    config = parse_config(
        {
            "brokers": {**BROKERS, "demo": {"type": "memory"}},
            "cluster": {
                "redis": "redis://127.0.0.1:6379/0",
                "log": "kafka-main",
                "node_ttl": "3s",
                "on_redis_down": "closed",
            },
        }
    )
    assert config.cluster is not None
    assert (config.cluster.log, config.cluster.node_ttl) == ("kafka-main", 3.0)
    assert config.cluster.on_redis_down == "closed"


def test_every_bad_field_is_named_at_once() -> None:
    problems = problems_of(
        {
            "brokers": BROKERS,
            "cluster": {
                "redis": "http://127.0.0.1:6379",
                "log": "mqtt-main",
                "node_ttl": "soon",
                "on_redis_down": "panic",
                "nodes": 3,
            },
        }
    )
    assert sorted(p.path for p in problems) == [
        "cluster.log",
        "cluster.node_ttl",
        "cluster.nodes",
        "cluster.on_redis_down",
        "cluster.redis",
    ]
    (log,) = (p for p in problems if p.path == "cluster.log")
    assert "mqtt" in log.message and "kafka" in log.message


def test_the_log_names_a_known_broker() -> None:
    (problem,) = problems_of({"brokers": BROKERS, "cluster": {"log": "nowhere"}})
    assert problem.path == "cluster.log"
    assert "unknown broker 'nowhere'" in problem.message
    assert "kafka-main" in problem.message


def test_the_memory_broker_in_a_cluster_requires_the_log() -> None:
    (problem,) = problems_of(
        {"brokers": {"demo": {"type": "memory"}}, "cluster": {"redis": "redis://r:6379"}}
    )
    assert problem.path == "cluster.log"
    assert "the memory broker in a cluster requires cluster.log" in problem.message


def test_the_memory_broker_without_a_cluster_is_fine() -> None:
    assert parse_config({"brokers": {"demo": {"type": "memory"}}}).cluster is None


def test_more_than_one_worker_needs_cluster_redis() -> None:
    from gateway.workers import workers_problem

    alone = parse_config({"brokers": BROKERS})
    log_only = parse_config({"brokers": BROKERS, "cluster": {"log": "kafka-main"}})
    shared = parse_config({"brokers": BROKERS, "cluster": {"redis": "redis://r:6379/0"}})
    for config in (alone, log_only, None):
        problem = workers_problem(config, 2)
        assert problem is not None
        assert [p.path for p in problem.problems] == ["cluster.redis"]
    assert workers_problem(shared, 4) is None
    assert workers_problem(alone, 1) is None
