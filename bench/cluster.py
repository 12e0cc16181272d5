"""Cluster benchmark: aggregate deliveries per second of ``serve --workers N``.

One command (defaults: N = 1 then 2, 40 SSE clients, 4000 events; about a minute)::

    .venv/bin/python bench/cluster.py

Each round writes a config (a Kafka broker on a fresh topic; an SSE API; a tier with
``max_connections``, so every connection takes a lease in Redis; ``cluster.redis`` on
the Redis of ``make test``), starts ``python -m gateway.cli serve --workers N`` (not
pinned: the workers share the machine's cores), opens the clients from this process
(SO_REUSEPORT spreads them over the workers), publishes warm-up events until every
client has seen one, then publishes ``events`` events to Kafka as fast as one aiokafka
producer sends them. Reported: deliveries (every client gets every event), wall time
from the first publish until the last delivery, aggregate deliveries per second, p50/p99
publish-to-receive latency and this process's CPU share (clients and producer).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import yaml
from aiokafka import AIOKafkaProducer
from harness.gateway import SSE_PATH, TIER, Gateway, sse_api
from harness.machine import describe, event_loop, raise_nofile
from harness.report import Latency, conclude, shortfall
from harness.sse import SSEClient, Tally, close_all, open_clients, sse_request

KAFKA = "127.0.0.1:9092"
REDIS = "redis://127.0.0.1:6379/0"
WARMUP_EVENTS = 5
COLUMNS = (
    "workers",
    "clients",
    "events",
    "deliveries",
    "missing / cut",
    "wall s",
    "**deliveries / s**",
    "p50 ms",
    "p99 ms",
    "max ms",
    "bench CPU %",
)


@dataclass
class Result:
    workers: int
    clients: int
    events: int
    deliveries: int
    cut: int
    out_of_order: int
    wall: float
    bench_cpu: float
    latency: Latency

    def cells(self) -> list[str]:
        return [
            str(self.workers),
            str(self.clients),
            str(self.events),
            str(self.deliveries),
            f"{self.clients * self.events - self.deliveries} / {self.cut}",
            f"{self.wall:.1f}",
            f"**{self.deliveries / self.wall:,.0f}**",
            *self.latency.cells(),
            f"{100 * self.bench_cpu / self.wall:.0f}",
        ]

    def shortfall(self) -> str | None:
        missing = self.clients * self.events - self.deliveries
        return shortfall(f"workers={self.workers}", missing, self.cut, self.out_of_order)


def payload(seq: int) -> bytes:
    return json.dumps({"seq": seq, "t": time.time_ns()}, separators=(",", ":")).encode()


async def run_round(server: Gateway, topic: str, workers: int, n: int, events: int) -> Result:
    token = server.token()
    request = sse_request(server.port, SSE_PATH, token)
    tally = Tally(n * events)
    clients: list[SSEClient] = []
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA, acks=1, linger_ms=5)
    await producer.start()
    try:
        await open_clients(server.port, request, n, tally, clients)
        # Warm-up: every client sees events before the measured phase (every worker's
        # hub is reading the topic by then).
        tally.warm_target = n
        deadline = time.monotonic() + 60
        warm = 0
        while not tally.warmed.is_set() and time.monotonic() < deadline:
            await producer.send_and_wait(topic, payload(-1 - warm))
            warm += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(tally.warmed.wait(), 0.5)
        if not tally.warmed.is_set():
            raise RuntimeError("the clients saw no warm-up event within 60 s")
        bench0 = time.process_time()
        wall0 = time.perf_counter()
        for seq in range(events):
            await producer.send(topic, payload(seq))
        await producer.flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tally.done.wait(), 60)
        wall = time.perf_counter() - wall0
        bench_cpu = time.process_time() - bench0
    finally:
        await producer.stop()
    cut = close_all(clients)
    return Result(
        workers=workers,
        clients=n,
        events=events,
        deliveries=tally.deliveries,
        cut=cut,
        out_of_order=tally.out_of_order,
        wall=wall,
        bench_cpu=bench_cpu,
        latency=Latency.of(tally.latencies_us),
    )


def wait_for_nodes(server: Gateway, workers: int) -> None:
    """Until every worker has joined (``streambridge_cluster_nodes``), so that the
    clients are spread over all of them, not only the first one up."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with urllib.request.urlopen(server.url("/metrics"), timeout=5) as response:
            text = response.read().decode()
        if f"streambridge_cluster_nodes {workers}.0" in text:
            time.sleep(1.0)  # the last one's listening socket follows its heartbeat
            return
        time.sleep(0.2)
    raise RuntimeError(f"{workers} workers did not join within 120 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--clients", type=int, default=40)
    parser.add_argument("--events", type=int, default=4000)
    args = parser.parse_args()
    raise_nofile()
    run, loop_name = event_loop()
    load = os.getloadavg()
    print(describe(loop_name, f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"))
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="sb-bench-cluster-") as tmp:
        for workers in args.workers:
            topic = f"bench.cluster.{uuid.uuid4().hex[:8]}"
            server = Gateway(Path(tmp))
            server.configure(
                {"type": "kafka", "bootstrap": KAFKA},
                [sse_api(topic)],
                cluster={"redis": REDIS, "node_ttl": "10s"},
            )
            config = yaml.safe_load(server.config.read_text())
            config["tiers"][TIER] = {"max_connections": 100_000}  # a lease per connection
            server.config.write_text(yaml.safe_dump(config))
            server.args = ["--workers", str(workers)]
            server.start_seconds = 120.0  # N processes importing at once on a loaded machine
            with server:
                wait_for_nodes(server, workers)
                result = run(run_round(server, topic, workers, args.clients, args.events))
            print(f"workers={workers}: {result.deliveries / result.wall:,.0f} deliveries/s")
            results.append(result)
    return conclude(COLUMNS, results)


if __name__ == "__main__":
    sys.exit(main())
