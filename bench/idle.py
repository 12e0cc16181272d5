"""Idle connections: what N open SSE or WebSocket streams cost one gateway.

    .venv/bin/python bench/idle.py --clients 2000                 # SSE
    .venv/bin/python bench/idle.py --clients 1000 --protocol ws
    .venv/bin/python bench/idle.py --clients 1000 --trace         # + tracemalloc, by line

One gateway (as bench/fanout.py configures it: memory broker, a topic without limits),
pinned to one core, the raw clients of bench/harness on the other. One client connects
first (the hub exists), then N-1 more, ``--at-once`` at a time. Reported: the time until
every stream has begun, the server's and this process's CPU seconds meanwhile, and the
server's VmRSS growth per connection after a second idle. With ``--trace`` the server
runs under tracemalloc (bench/harness/tracing) and the live allocations that the N-1
connections added are listed by source line, per connection (the RSS figure is then
tracemalloc's own, not the gateway's: measure it without ``--trace``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from fanout import configure
from harness.gateway import ROOT, SSE_PATH, WS_SUB_PATH, Gateway
from harness.machine import (
    describe,
    event_loop,
    pick_cores,
    raise_nofile,
    rss_kb,
    thread_cpu_seconds,
)
from harness.machine import server_cpu_seconds as cpu
from harness.sse import Receiver, SSEClient, Tally, close_all, open_clients, sse_request
from harness.websocket import WSClient, ws_request

HOOK = Path(__file__).resolve().parent / "harness" / "tracing"


def snapshot(server: Gateway, prefix: str, n: int) -> tracemalloc.Snapshot:
    os.kill(server.pid, signal.SIGUSR1)
    done = Path(f"{prefix}.{n}.done")
    deadline = time.monotonic() + 120
    while not done.exists():
        if time.monotonic() > deadline:
            raise TimeoutError("no snapshot from the server")
        time.sleep(0.05)
    return tracemalloc.Snapshot.load(f"{prefix}.{n}.snap")


async def measure(server: Gateway, args: argparse.Namespace, prefix: str | None) -> None:
    tally = Tally(1 << 62)
    kind: type[Receiver]
    if args.protocol == "ws":
        request, kind, on_headers = (
            ws_request(server.port, WS_SUB_PATH, server.token()),
            WSClient,
            True,
        )
    else:
        request, kind, on_headers = (
            sse_request(server.port, SSE_PATH, server.token()),
            SSEClient,
            False,
        )
    clients: list[Receiver] = []
    try:
        await open_clients(
            server.port, request, 1, tally, clients, kind=kind, ready_on_headers=on_headers
        )
        await asyncio.sleep(0.5)
        before = await asyncio.to_thread(snapshot, server, prefix, 0) if prefix else None
        rss0, client0 = rss_kb(server.pid), time.process_time()
        split0, threads0 = cpu(server.pid), thread_cpu_seconds(server.pid)
        server0 = sum(split0)
        wall0 = time.perf_counter()
        await open_clients(
            server.port,
            request,
            args.clients - 1,
            tally,
            clients,
            kind=kind,
            at_once=args.at_once,
            ready_on_headers=on_headers,
        )
        wall = time.perf_counter() - wall0
        split, threads = cpu(server.pid), thread_cpu_seconds(server.pid)
        server_cpu, client_cpu = sum(split) - server0, time.process_time() - client0
        await asyncio.sleep(1.0)
        per = (rss_kb(server.pid) - rss0) / (args.clients - 1)
        print(
            f"{args.protocol} N={args.clients}: connected in {wall:.2f} s, server CPU "
            f"{server_cpu:.2f} s ({1000 * server_cpu / (args.clients - 1):.2f} ms per "
            f"connection), clients' CPU {client_cpu:.2f} s; server RSS {per:.2f} KiB per idle "
            f"connection; {sum(c.lost or c.ended for c in clients)} cut; server user "
            f"{split[0] - split0[0]:.2f} s, sys {split[1] - split0[1]:.2f} s, event loop "
            f"{threads['event loop'] - threads0['event loop']:.2f} s"
        )
        if prefix and before is not None:
            after = await asyncio.to_thread(snapshot, server, prefix, 1)
            stats = after.compare_to(before, "lineno")
            n = args.clients - 1
            print(f"traced: {sum(s.size_diff for s in stats) / 1024 / n:.2f} KiB per connection")
            for stat in stats[: args.top]:
                frame = stat.traceback[0]
                where = f"{frame.filename.split('site-packages/')[-1]}:{frame.lineno}"
                print(f"{stat.size_diff / n:8.0f} B {stat.count_diff / n:6.2f} objects  {where}")
    finally:
        close_all(clients)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--protocol", choices=["sse", "ws"], default="sse")
    parser.add_argument("--at-once", type=int, default=1000, help="clients connecting at a time")
    parser.add_argument("--trace", action="store_true", help="tracemalloc in the server")
    parser.add_argument("--top", type=int, default=30, help="source lines listed with --trace")
    parser.add_argument("--server-root", type=Path, default=ROOT)
    parser.add_argument("--profile", help="cProfile the server into this file")
    args = parser.parse_args()
    if raise_nofile() < args.clients + 64:
        print(f"warning: the open-file limit may not fit {args.clients} clients")
    server_core, client_core = pick_cores()
    if client_core is not None:
        os.sched_setaffinity(0, {client_core})
    run, loop_name = event_loop()
    print(describe(f"server on core {server_core}, clients on core {client_core}", loop_name))
    with tempfile.TemporaryDirectory(prefix="streambridge-idle-") as tmp:
        server = Gateway(Path(tmp), server_core, args.server_root.resolve(), args.profile)
        configure(server, 4096)
        prefix = None
        if args.trace:
            prefix = f"{tmp}/trace"
            server.paths.append(str(HOOK))
            os.environ["STREAMBRIDGE_TRACE"] = prefix
            server.start_seconds = 120.0
        with server:
            run(measure(server, args, prefix))
    return 0


if __name__ == "__main__":
    sys.exit(main())
