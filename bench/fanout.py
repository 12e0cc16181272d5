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
import os
import sys
import tempfile
from pathlib import Path
from urllib.parse import quote

from harness import versus
from harness.gateway import (
    ROOT,
    SSE_PATH,
    WS_PATH,
    WS_SUB_PATH,
    Gateway,
    publish_api,
    sse_api,
    ws_subscribe_api,
)
from harness.machine import describe, event_loop, pick_cores, raise_nofile
from harness.report import conclude
from harness.rounds import Result, Target, run_round

DEFAULT_CLIENTS = [100, 1000]
DEFAULT_DELIVERY_RATES = [20_000.0, 50_000.0, 100_000.0]


def configure(
    server: Gateway,
    queue: int,
    client_filters: bool = False,
    coalesce: str | None = None,
    tcp_nodelay: bool = True,
) -> None:
    """Memory broker; an SSE API, a WebSocket subscribe API and a WebSocket publish API
    on one channel."""
    channel = "bench.events"
    sse = sse_api(channel)
    if client_filters:  # CONTRACT §10: clients may send ?filter=
        sse["topics"][0]["client_filters"] = True
    apis = [sse, ws_subscribe_api(channel), publish_api(channel)]
    server.configure({"type": "memory"}, apis, queue, coalesce=coalesce, tcp_nodelay=tcp_nodelay)


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


# --- a round ---------------------------------------------------------------------------------


def target(server: Gateway, client_filter: str | None = None) -> Target:
    path = SSE_PATH if client_filter is None else f"{SSE_PATH}?filter={quote(client_filter)}"
    return Target(
        "gateway",
        server.port,
        server.core,
        [server.pid],
        path,
        WS_SUB_PATH,
        server.ws_url(WS_PATH),
        server.token(),
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
        "--against",
        choices=["nchan"],
        help="run each --workload on the gateway and on nginx + nchan in the same run "
        "(nginx-light and libnginx-mod-nchan are installed with apt when missing) and "
        "report both, with the ratios; --seconds sets the publishing time",
    )
    parser.add_argument(
        "--workload",
        action="append",
        choices=sorted(versus.WORKLOADS),
        help="with --against (repeatable; default all)",
    )
    parser.add_argument(
        "--coalesce", help="gateway.coalesce for the gateway (e.g. 5ms; default off)"
    )
    parser.add_argument(
        "--nagle",
        action="store_true",
        help="gateway.tcp_nodelay: false for the gateway (Nagle's algorithm on its event "
        "streams, as nginx runs nchan's subscribers; default: TCP_NODELAY)",
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
    if args.against:
        most = max(versus.WORKLOADS[w].clients for w in args.workload or versus.WORKLOADS)

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

        def gateway() -> Gateway:
            server = Gateway(Path(tmp), server_core, args.server_root.resolve())
            configure(server, args.queue, args.filter is not None, args.coalesce, not args.nagle)
            return server

        if args.against:
            return versus.compare(
                run,
                Path(tmp),
                server_core,
                args.workload or list(versus.WORKLOADS),
                seconds=args.seconds,
                payload=args.payload,
                timeout=args.timeout,
                gateway=gateway,
                gateway_target=target,
            )
        for n, rate, count in rounds:
            with gateway() as server:
                round_ = run_round(
                    target(server, args.filter), n, count, rate, args.payload, args.timeout
                )
                result = run(round_)
            results.append(result)
            print(result.progress(), flush=True)
    return conclude(COLUMNS, results)


if __name__ == "__main__":
    sys.exit(main())
