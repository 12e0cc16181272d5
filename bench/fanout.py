"""Fan-out benchmark: one topic to N Server-Sent Events clients.

One command (defaults: N = 100 and 1000, each asked for 20k, 50k and 100k deliveries/s
for 10 s of publishing; about two minutes)::

    .venv/bin/python bench/fanout.py

Each round writes a config (memory broker; an SSE API with one subscribe topic and a
WebSocket API with one publish topic on the same channel; a tier without limits; a large
``gateway.client_queue``), starts ``python -m gateway.cli serve`` pinned to one core, opens
N raw asyncio TCP connections from this process pinned to another core (hand-written
HTTP/1.1 GET; the chunked body and the ``data:`` lines are parsed here), waits until every
stream has begun (its ``retry:`` field), then publishes events at a fixed rate through one
WebSocket connection. Each payload carries its sequence number and ``time.time_ns()`` at
publish; each client notes the receive time (same clock, same machine).

Reported per round: deliveries (missing ones and clients cut), events per server write
(events / HTTP chunks received), wall time, the server's CPU seconds (``/proc/<pid>/stat``
utime+stime from the first publish until every client has every event), deliveries per
server CPU-second, the same per busy second of the server's core (``/proc/stat``, which
also holds softirq work the kernel defers to ksoftirqd), p50/p99/max publish-to-receive
latency, the server's resident memory per idle connection (VmRSS with N connections minus
VmRSS with one, over N-1) and this process's CPU share (the clients must not be the
bottleneck).
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
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from harness.gateway import ROOT, SSE_PATH, WS_PATH, Gateway, publish_api, sse_api
from harness.machine import (
    core_busy_seconds,
    describe,
    event_loop,
    pick_cores,
    raise_nofile,
    rss_kb,
    server_cpu_seconds,
)
from harness.report import Latency, conclude, shortfall
from harness.schedule import paced
from harness.sse import SSEClient, Tally, close_all, open_clients, sse_request
from websockets.asyncio.client import connect

WARMUP_EVENTS = 20
DEFAULT_CLIENTS = [100, 1000]
DEFAULT_DELIVERY_RATES = [20_000.0, 50_000.0, 100_000.0]


def configure(server: Gateway, queue: int, client_filters: bool = False) -> None:
    """Memory broker; an SSE API and a WebSocket publish API on one channel."""
    channel = "bench.events"
    sse = sse_api(channel)
    if client_filters:  # CONTRACT §10: clients may send ?filter=
        sse["topics"][0]["client_filters"] = True
    server.configure({"type": "memory"}, [sse, publish_api(channel)], queue)


# --- report -----------------------------------------------------------------------------------

COLUMNS = (
    "N",
    "ev/s",
    "events",
    "deliveries",
    "missing / cut",
    "events per write",
    "wall s",
    "server CPU-s (user+sys)",
    "server CPU %",
    "**deliveries / server CPU-s**",
    "deliveries / server-core busy s",
    "p50 ms",
    "p99 ms",
    "max ms",
    "server KB / idle conn",
    "client CPU %",
)


# --- a round ----------------------------------------------------------------------------------


@dataclass
class Result:
    clients: int
    events: int
    rate: float
    deliveries: int
    missing: int
    cut: int
    out_of_order: int
    wall: float
    server_cpu: float
    server_user: float
    core_busy: float
    bench_cpu: float
    writes: int
    latency: Latency
    kb_per_conn: float

    @property
    def per_cpu_second(self) -> float:
        return self.deliveries / self.server_cpu if self.server_cpu else float("nan")

    def progress(self) -> str:
        return (
            f"N={self.clients}, {self.rate:g} events/s: "
            f"{self.deliveries}/{self.clients * self.events} deliveries, "
            f"{self.per_cpu_second:,.0f} per server CPU-second"
        )

    def cells(self) -> list[str]:
        system = self.server_cpu - self.server_user
        return [
            str(self.clients),
            f"{self.rate:g}",
            str(self.events),
            str(self.deliveries),
            f"{self.missing} / {self.cut}",
            f"{self.deliveries / self.writes:.2f}" if self.writes else "n/a",
            f"{self.wall:.1f}",
            f"{self.server_cpu:.2f} ({self.server_user:.2f}+{system:.2f})",
            f"{100 * self.server_cpu / self.wall:.0f}",
            f"**{self.per_cpu_second:,.0f}**",
            f"{self.deliveries / self.core_busy:,.0f}" if self.core_busy else "n/a",
            *self.latency.cells(),
            f"{self.kb_per_conn:.1f}",
            f"{100 * self.bench_cpu / self.wall:.0f}",
        ]

    def shortfall(self) -> str | None:
        return shortfall(f"N={self.clients}", self.missing, self.cut, self.out_of_order)


def make_payload(seq: int, pad: str) -> str:
    return json.dumps({"seq": seq, "t": time.time_ns(), "pad": pad}, separators=(",", ":"))


async def run_round(
    server: Gateway,
    n: int,
    events: int,
    rate: float,
    payload: int,
    drain: float,
    client_filter: str | None = None,
) -> Result:
    token = server.token()
    path = SSE_PATH if client_filter is None else f"{SSE_PATH}?filter={quote(client_filter)}"
    request = sse_request(server.port, path, token)
    pad = "x" * max(0, payload - len(make_payload(0, "")))
    tally = Tally(n * events)
    clients: list[SSEClient] = []
    headers = {"Authorization": f"Bearer {token}"}
    async with connect(server.ws_url(WS_PATH), additional_headers=headers) as ws:
        # One connection first (the hub now exists), then the baseline, then the other N-1.
        await open_clients(server.port, request, 1, tally, clients)
        await asyncio.sleep(0.5)
        base_rss = rss_kb(server.pid)
        await open_clients(server.port, request, n - 1, tally, clients)
        await asyncio.sleep(1.0)
        idle_rss = rss_kb(server.pid)
        kb_per_conn = (idle_rss - base_rss) / max(1, n - 1)

        # Warm-up: a few events every client must see before the measured phase.
        tally.warm_target = n * WARMUP_EVENTS
        for i in range(WARMUP_EVENTS):
            await ws.send(make_payload(-1 - i, pad))
        await asyncio.wait_for(tally.warmed.wait(), 60)
        await asyncio.sleep(0.2)

        cpu0 = server_cpu_seconds(server.pid)
        core0 = core_busy_seconds(server.core)
        bench0 = time.process_time()
        tally.writes = 0
        wall0 = time.perf_counter()
        async for seq in paced(events, rate):
            await ws.send(make_payload(seq, pad))
        # Every client has every event, or the deadline after the last publish.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tally.done.wait(), drain)
        wall = time.perf_counter() - wall0
        cpu1 = server_cpu_seconds(server.pid)
        user, system = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
        core1 = core_busy_seconds(server.core)
        bench_cpu = time.process_time() - bench0
    cut = close_all(clients)
    return Result(
        clients=n,
        events=events,
        rate=rate,
        deliveries=tally.deliveries,
        missing=n * events - tally.deliveries,
        cut=cut,
        out_of_order=tally.out_of_order,
        wall=wall,
        server_cpu=user + system,
        server_user=user,
        core_busy=core1 - core0,
        bench_cpu=bench_cpu,
        writes=tally.writes,
        latency=Latency.of(tally.latencies_us),
        kb_per_conn=kb_per_conn,
    )


def plan(args: argparse.Namespace) -> list[tuple[int, float, int]]:
    """(clients, events/s, events) for every round: each --clients with each rate."""
    rounds = []
    for n in args.clients or DEFAULT_CLIENTS:
        rates = args.rate or [d / n for d in args.delivery_rate or DEFAULT_DELIVERY_RATES]
        for rate in rates:
            events = args.events or max(1, round(rate * args.seconds))
            rounds.append((n, rate, events))
    return rounds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--clients",
        type=int,
        action="append",
        help=f"SSE clients (repeatable; default {DEFAULT_CLIENTS})",
    )
    rates = parser.add_mutually_exclusive_group()
    rates.add_argument("--rate", type=float, action="append", help="events/s (repeatable)")
    rates.add_argument(
        "--delivery-rate",
        type=float,
        action="append",
        help=f"deliveries/s asked of the server, events/s = this / N "
        f"(repeatable; default {DEFAULT_DELIVERY_RATES})",
    )
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--events", type=int, help="events per round")
    length.add_argument(
        "--seconds", type=float, default=10.0, help="publishing time per round (default 10)"
    )
    parser.add_argument("--payload", type=int, default=128, help="payload JSON bytes")
    parser.add_argument("--queue", type=int, default=4096, help="gateway.client_queue")
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait after the last publish"
    )
    parser.add_argument(
        "--filter",
        help="a ?filter= CEL expression every client sends (it should admit every event, "
        "e.g. 'data.seq > -100', so deliveries stay comparable); the topic gets "
        "client_filters: true",
    )
    parser.add_argument(
        "--server-root",
        type=Path,
        default=ROOT,
        help="run the server from this source tree (to compare two versions)",
    )
    args = parser.parse_args()
    rounds = plan(args)
    most = max(n for n, _, _ in rounds)

    nofile = raise_nofile()
    if nofile < most + 64:
        print(f"warning: RLIMIT_NOFILE is {nofile}; {most} clients may not fit")
    server_core, client_core = pick_cores()
    if client_core is not None:
        os.sched_setaffinity(0, {client_core})
        pinning = f"server on core {server_core}, clients on core {client_core}"
    else:
        pinning = "ONE usable core: server and clients unpinned, sharing it"
    run, loop_name = event_loop()
    print(describe(pinning, f"client loop {loop_name}"), flush=True)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="streambridge-bench-") as tmp:
        for n, rate, count in rounds:
            server = Gateway(Path(tmp), server_core, args.server_root.resolve())
            configure(server, args.queue, client_filters=args.filter is not None)
            with server:
                result = run(
                    run_round(server, n, count, rate, args.payload, args.timeout, args.filter)
                )
            results.append(result)
            print(result.progress(), flush=True)
    return conclude(COLUMNS, results)


if __name__ == "__main__":
    sys.exit(main())
