"""Where a window runs (CONTRACT §11): in the gateway, or in the cluster's workers."""

from __future__ import annotations

import hashlib
from typing import Any

from bridge.config import FilterStep, MapStep, parse_config
from bridge.window_topics import cluster_log_topic, window_jobs, window_topic
from connectors.cluster.fence import Fence, source_headers

WINDOW = {"window": {"tumbling": "10s", "group_by": "data.region", "aggregate": {"n": "count()"}}}


def config(cluster: dict[str, Any] | None, *topics: dict[str, Any], broker: str = "kafka") -> Any:
    raw: dict[str, Any] = {
        "brokers": {
            "kafka": {"type": "kafka", "bootstrap": "127.0.0.1:9092"},
            "mqtt": {"type": "mqtt", "url": "mqtt://127.0.0.1:1883"},
        },
        "apis": [
            {
                "name": "Orders",
                "version": "1.0.0",
                "context": "/o",
                "broker": broker,
                "topics": list(topics),
            }
        ],
    }
    if cluster is not None:
        raw["cluster"] = cluster
    return parse_config(raw, {})


STATS = {
    "name": "/stats",
    "channel": "orders",
    "pipeline": [{"filter": "data.amount > 0"}, WINDOW, {"map": "{'n': data.n}"}],
}


def test_the_derived_topic_is_named_after_api_version_and_topic() -> None:
    assert window_topic("Orders", "1.0.0", "/stats") == "sb.win.Orders.1.0.0.stats"
    assert window_topic("My API", "2", "/by region/x") == "sb.win.My_API.2.by_region_x"


def test_without_cluster_windows_stay_in_the_gateway() -> None:
    assert window_jobs(config(None, STATS)) == []


def test_with_cluster_a_kafka_topic_window_runs_in_workers() -> None:
    (job,) = window_jobs(config({"log": "kafka"}, STATS))
    assert (job.kafka, job.source, job.output) == ("kafka", "orders", "sb.win.Orders.1.0.0.stats")
    assert [type(s) for s in job.before] == [FilterStep]
    assert [type(s) for s in job.after] == [MapStep]
    assert job.window.tumbling == 10.0


def test_an_mqtt_topic_window_reads_the_cluster_log() -> None:
    (job,) = window_jobs(config({"log": "kafka"}, STATS, broker="mqtt"))
    assert (job.kafka, job.source) == ("kafka", cluster_log_topic("mqtt", "orders"))


def test_topics_without_window_or_with_parameters_stay_in_the_gateway() -> None:
    plain = {"name": "/all", "channel": "orders"}
    param = {"name": "/by/{region}", "channel": "orders.{region}", "pipeline": [WINDOW]}
    assert window_jobs(config({"log": "kafka"}, plain, param)) == []


def test_a_cluster_log_topic_is_named_as_its_copier_names_it() -> None:
    digest = hashlib.sha256(b"mqtt-main\0sensors/+/temp").hexdigest()[:12]
    assert (
        cluster_log_topic("mqtt-main", "sensors/+/temp")
        == f"sb.log.mqtt-main.sensors_temp.{digest}"
    )


def test_a_worker_reads_a_cluster_log_as_gateways_do() -> None:
    fence = Fence()

    def at(epoch: int, sequence: int) -> dict[str, str]:
        return {"sb-epoch": str(epoch), "sb-seq": str(sequence), "sb-channel": "a/b", "x": "1"}

    admitted = [
        fence.admit(h) for h in (at(1, 0), at(1, 1), at(1, 1), at(2, 0), at(1, 2), at(2, 1))
    ]
    assert admitted == [False, True, False, False, False, True], "markers, repeats, late appends"
    assert fence.admit({"x": "1"}), "a record written straight to the log"
    assert source_headers(at(1, 1)) == {"x": "1"}
