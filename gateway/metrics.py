"""Prometheus series of CONTRACT §9, on a registry of the gateway's own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

disable_created_metrics()  # type: ignore[no-untyped-call] # the *_created series double the output and nobody graphs them


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_in = Counter(
            "streambridge_events_in",
            "Events read from a broker",
            ["api", "version", "topic"],
            registry=r,
        )
        self.events_out = Counter(
            "streambridge_events_out",
            "Events delivered to clients",
            ["api", "version", "topic", "protocol"],
            registry=r,
        )
        self.events_published = Counter(
            "streambridge_events_published",
            "Client frames published to a broker",
            ["api", "version", "topic"],
            registry=r,
        )
        self.connections = Gauge(
            "streambridge_open_connections", "Open client streams", ["protocol"], registry=r
        )
        self.throttled = Counter(
            "streambridge_throttled",
            "Streams closed by events_per_minute",
            ["api", "version"],
            registry=r,
        )
        self.revoked = Counter(
            "streambridge_revoked",
            "Streams closed by expiry or revocation",
            ["api", "version"],
            registry=r,
        )
        self.rejected = Counter(
            "streambridge_requests_rejected", "Data-plane requests refused", ["status"], registry=r
        )
        self.slow_disconnects = Counter(
            "streambridge_slow_client_disconnects",
            "Clients cut for falling behind",
            ["protocol"],
            registry=r,
        )
        self.expression_errors = Counter(
            "streambridge_expression_errors",
            "Events skipped because an expression failed",
            ["api", "version", "topic", "step"],
            registry=r,
        )
        self.latency = Histogram(
            "streambridge_delivery_latency_seconds",
            "From event in the hub to written to a client",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.webhook_retries = Counter(
            "streambridge_webhook_retries",
            "Webhook delivery retries",
            ["api", "version"],
            registry=r,
        )
        self.webhook_dead_letters = Counter(
            "streambridge_webhook_dead_letters",
            "Webhook deliveries dead-lettered",
            ["api", "version"],
            registry=r,
        )
