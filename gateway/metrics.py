"""Prometheus series of CONTRACT §9, exposed through a collector of our own.

prometheus_client's counters take a lock on every ``inc``; on the fan-out path that was
15-25% of the server's CPU at one event per write (BENCHMARKS.md). Every update here
happens on the event loop thread and the scrape runs there too, so plain integers are
exact and need no lock; ``collect`` turns them into the standard metric families.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector


class Value:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount


class Family:
    """A counter or gauge with labels; ``labels(...)`` returns a cached child."""

    def __init__(self, kind: str, name: str, documentation: str, labelnames: Sequence[str]):
        self.kind = kind
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self.children: dict[tuple[str, ...], Value] = {}

    def labels(self, *values: str) -> Value:
        child = self.children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}")
            child = self.children[values] = Value()
        return child

    def collect(self) -> Metric:
        family: CounterMetricFamily | GaugeMetricFamily
        if self.kind == "counter":
            family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        else:
            family = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self.children.items():
            family.add_metric(list(values), child.value)
        return family


class Histogram:
    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = list(buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def observe_many(self, value: float, times: int) -> None:
        """``times`` observations of ``value`` (one event written to many clients)."""
        self.counts[bisect_left(self.bounds, value)] += times
        self.sum += value * times

    def cumulative(self) -> tuple[list[tuple[str, float]], float]:
        cumulative, buckets = 0.0, []
        for bound, count in zip([*self.bounds, float("inf")], self.counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        return buckets, self.sum

    def collect(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation)
        buckets, total = self.cumulative()
        family.add_metric([], buckets, total)
        return family


class HistogramFamily:
    """A histogram with labels; ``labels(...)`` returns a cached child."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self.buckets = list(buckets)
        self.children: dict[tuple[str, ...], Histogram] = {}

    def labels(self, *values: str) -> Histogram:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = Histogram(self.name, self.documentation, self.buckets)
        return child

    def collect(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self.children.items():
            buckets, total = child.cumulative()
            family.add_metric(list(values), buckets, total)
        return family


class Metrics(Collector):
    def __init__(self) -> None:
        self._families: list[Family | Histogram | HistogramFamily] = []
        # Values read from elsewhere (connectors' own reconnect counts) just before a scrape.
        self.before_collect: list[Callable[[], None]] = []
        counter, gauge = self._counter, self._gauge
        self.events_in = counter(
            "streambridge_events_in", "Events read from a broker", ["api", "version", "topic"]
        )
        self.events_out = counter(
            "streambridge_events_out",
            "Events delivered to clients",
            ["api", "version", "topic", "protocol"],
        )
        self.events_published = counter(
            "streambridge_events_published",
            "Client frames published to a broker",
            ["api", "version", "topic"],
        )
        self.connections = gauge(
            "streambridge_open_connections", "Open client streams", ["protocol"]
        )
        # Counted instead of an INFO line per stream opened (admission's largest cost).
        self.streams_opened = counter(
            "streambridge_streams_opened", "Client streams opened", ["protocol"]
        )
        # Of those, new live SSE streams admitted by the server protocol (sse_express.py).
        self.streams_express = counter(
            "streambridge_streams_express", "SSE streams admitted without an ASGI task", []
        )
        self.throttled = counter(
            "streambridge_throttled", "Streams closed by events_per_minute", ["api", "version"]
        )
        self.revoked = counter(
            "streambridge_revoked", "Streams closed by expiry or revocation", ["api", "version"]
        )
        self.rejected = counter(
            "streambridge_requests_rejected", "Data-plane requests refused", ["status"]
        )
        self.slow_disconnects = counter(
            "streambridge_slow_client_disconnects", "Clients cut for falling behind", ["protocol"]
        )
        self.expression_errors = counter(
            "streambridge_expression_errors",
            "Events skipped because an expression failed",
            ["api", "version", "topic", "step"],
        )
        self.webhook_retries = counter(
            "streambridge_webhook_retries", "Webhook delivery retries", ["api", "version"]
        )
        self.webhook_deliveries = counter(
            "streambridge_webhook_deliveries",
            "Webhook delivery attempts by outcome (delivered, failed, gone)",
            ["api", "version", "outcome"],
        )
        self.webhook_dead_letters = counter(
            "streambridge_webhook_dead_letters",
            "Webhook deliveries dead-lettered",
            ["api", "version"],
        )
        self.reconnects = counter(
            "streambridge_broker_reconnects",
            "Broker subscriptions restarted after a failure",
            ["broker"],
        )
        self.upstream_connections = gauge(
            "streambridge_upstream_connections",
            "Open connections to upstream endpoints (CONTRACT §13)",
            ["api"],
        )
        self.endpoint_suspended = gauge(
            "streambridge_endpoint_suspended",
            "1 while an API's upstream endpoint is suspended after failures",
            ["api"],
        )
        self.task_restarts = counter(
            "streambridge_task_restarts",
            "Background tasks that failed and were restarted, by kind of task",
            ["task"],
        )
        self.open_hubs = gauge(
            "streambridge_open_hubs", "Hubs reading a channel, idle ones included", []
        )
        self.open_files = gauge(
            "streambridge_open_files", "Files the process holds open (not sockets or pipes)", []
        )
        # CONTRACT §11, only with a ``cluster`` section.
        self.cluster_nodes = gauge(
            "streambridge_cluster_nodes", "Live nodes of the cluster this node sees", []
        )
        self.cluster_degraded = gauge(
            "streambridge_cluster_degraded",
            "1 while Redis is unreachable and on_redis_down applies",
            [],
        )
        self.latency = Histogram(
            "streambridge_delivery_latency_seconds",
            "From event in the hub to written to a client",
            (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self._families.append(self.latency)
        # CONTRACT §10: delivery policies and visible lag.
        self.conflated = counter(
            "streambridge_conflated_events",
            "Events replaced by a later one of their key before a conflated client got them",
            ["api", "version"],
        )
        self.sampled_out = counter(
            "streambridge_sampled_out",
            "Events a sampled client's tier left out",
            ["api", "version"],
        )
        self.client_lag = HistogramFamily(
            "streambridge_client_lag_events",
            "Events queued for a client when its writer takes them (at most once a second)",
            ["api", "version"],
            (0, 1, 4, 16, 64, 256, 1024, 4096, 16384),
        )
        self._families.append(self.client_lag)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def _counter(self, name: str, documentation: str, labels: Sequence[str]) -> Family:
        family = Family("counter", name, documentation, labels)
        self._families.append(family)
        return family

    def _gauge(self, name: str, documentation: str, labels: Sequence[str]) -> Family:
        family = Family("gauge", name, documentation, labels)
        self._families.append(family)
        return family

    def collect(self) -> Iterator[Metric]:
        for refresh in self.before_collect:
            refresh()
        for family in self._families:
            yield family.collect()


def open_files() -> int:
    """Regular files this process holds open, from ``/proc/self/fd`` (0 where there is no
    procfs): what CONTRACT §4c keeps flat however many hubs idle."""
    directory = "/proc/self/fd"
    count = 0
    try:
        descriptors = os.listdir(directory)
    except OSError:
        return 0
    for descriptor in descriptors:
        try:
            target = os.readlink(f"{directory}/{descriptor}")
        except OSError:  # closed meanwhile (the listing's own descriptor among them)
            continue
        if target.startswith("/") and not target.startswith(("/dev/", "/proc/")):
            count += 1
    return count
