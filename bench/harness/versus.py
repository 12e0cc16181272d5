"""``bench/fanout.py --against nchan``: each workload on the gateway and on nginx + nchan
in the same run, the same clients and publishing pace, the server on one core and the
clients on the other; the report gives both servers' figures and the ratios (gateway over
nchan), with the load average of the machine when each workload ran."""

from __future__ import annotations

import os
from collections.abc import Callable, Coroutine
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .gateway import Gateway
from .nchan import CHANNEL, Nchan
from .report import table
from .rounds import Result, Target, run_round

Run = Callable[[Coroutine[Any, Any, Result]], Result]


@dataclass(frozen=True)
class Workload:
    label: str
    protocol: str  # "sse" or "ws"
    clients: int
    rate: float  # events/s
    at_once: int = 64  # clients connecting at a time


WORKLOADS = {
    "sse-1000": Workload("SSE N=1000, 50 ev/s", "sse", 1000, 50),
    "sse-5000": Workload("SSE N=5000, 15 ev/s", "sse", 5000, 15),
    "ws-1000": Workload("WebSocket N=1000, 50 ev/s", "ws", 1000, 50),
    "setup-10000": Workload("SSE N=10,000, 2 ev/s (connection setup)", "sse", 10_000, 2, 1000),
}


def nchan_target(server: Nchan) -> Target:
    return Target(
        server.name,
        server.port,
        server.core,
        server.pids,
        f"/sub/{CHANNEL}",
        f"/sub/{CHANNEL}",
        f"ws://127.0.0.1:{server.port}/pub/{CHANNEL}",
        ready_on_headers=True,
    )


def _ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x" if theirs else "n/a"


def _split(result: Result) -> str:
    """User + system µs of server CPU per delivery."""
    if not result.deliveries:
        return "n/a"
    user = 1e6 * result.server_user / result.deliveries
    return f"{user:.1f}+{1e6 * (result.server_cpu - result.server_user) / result.deliveries:.1f}"


def _clients(result: Result) -> str:
    """µs of the clients' CPU per delivery: on loopback the kernel charges part of a
    send to the receiving side's process (with Nagle's algorithm, the send an ACK lets go)."""
    return f"{1e6 * result.bench_cpu / result.deliveries:.1f}" if result.deliveries else "n/a"


def _rows(workload: Workload, load: str, gw: Result, nc: Result) -> list[str]:
    return [
        workload.label,
        load,
        f"{gw.per_cpu_second:,.0f} / {nc.per_cpu_second:,.0f}",
        f"**{_ratio(gw.per_cpu_second, nc.per_cpu_second)}**",
        f"{gw.latency.p50_ms:.1f} / {nc.latency.p50_ms:.1f}",
        f"{gw.latency.p99_ms:.1f} / {nc.latency.p99_ms:.1f}",
        f"**{_ratio(gw.latency.p99_ms, nc.latency.p99_ms)}**",
        f"{_split(gw)} / {_split(nc)}",
        f"{_clients(gw)} / {_clients(nc)}",
        f"{gw.kb_per_conn:.1f} / {nc.kb_per_conn:.1f}",
        f"{gw.setup_seconds:.2f} / {nc.setup_seconds:.2f}",
        f"{gw.setup_server_cpu:.2f} / {nc.setup_server_cpu:.2f}",
        f"{gw.setup_client_cpu:.2f} / {nc.setup_client_cpu:.2f}",
        f"{gw.missing}+{gw.out_of_order} / {nc.missing}+{nc.out_of_order}",
    ]


COLUMNS = (
    "workload",
    "load (1-min avg) before",
    "deliveries / server CPU-s (gateway / nchan)",
    "ratio",
    "p50 ms",
    "p99 ms",
    "p99 ratio",
    "µs CPU / delivery, user+sys",
    "clients' µs CPU / delivery",
    "idle KiB / conn",
    "N connected in s",
    "server CPU-s meanwhile",
    "clients' CPU-s meanwhile",
    "lost+reordered",
)


def compare(
    run: Run,
    workdir: Path,
    server_core: int | None,
    names: list[str],
    *,
    seconds: float,
    payload: int,
    timeout: float,
    gateway: Callable[[], AbstractContextManager[Gateway]],
    gateway_target: Callable[[Gateway], Target],
) -> int:
    rows, results = [], []
    for name in names:
        workload = WORKLOADS[name]
        events = max(1, round(workload.rate * seconds))
        load = f"{os.getloadavg()[0]:.1f}"

        def one(target: Target, w: Workload = workload, count: int = events) -> Result:
            round_ = run_round(
                target,
                w.clients,
                count,
                w.rate,
                payload,
                timeout,
                protocol=w.protocol,
                at_once=w.at_once,
            )
            return run(round_)

        with gateway() as server:
            ours = one(gateway_target(server))
        print(ours.progress(), flush=True)
        with Nchan(workdir, server_core) as reference:
            theirs = one(nchan_target(reference))
        print(theirs.progress(), flush=True)
        rows.append(_rows(workload, load, ours, theirs))
        results += [ours, theirs]
    print()
    print(table(COLUMNS, rows))
    short = [line for r in results if (line := r.shortfall())]
    for line in short:
        print(line)
    return 1 if short else 0
