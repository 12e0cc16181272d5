"""One fan-out round against a server (the gateway, or nginx + nchan): N raw clients
(SSE or WebSocket) connect, a warm-up, then events published at a fixed rate through one
WebSocket; what the clients received, the server's CPU and memory, the connection time."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from websockets.asyncio.client import connect

from .machine import core_busy_seconds, server_cpu_seconds
from .report import Latency, shortfall
from .schedule import paced
from .sse import Receiver, SSEClient, Tally, close_all, open_clients, sse_request
from .websocket import WSClient, ws_request

WARMUP_EVENTS = 20


@dataclass
class Target:
    """How a round reaches a server: its port and core, its processes (CPU and memory
    are summed over them), the subscriber paths, the publisher's WebSocket URL."""

    name: str
    port: int
    core: int | None
    pids: list[int]
    sse_path: str
    ws_path: str
    publish_url: str
    token: str | None = None
    ready_on_headers: bool = False  # nchan sends no retry: its stream begins at the 200

    def cpu(self) -> tuple[float, float]:
        user = system = 0.0
        for pid in self.pids:
            u, s = server_cpu_seconds(pid)
            user, system = user + u, system + s
        return user, system

    def rss_kb(self) -> int:
        total = 0
        for pid in self.pids:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        return total

    def request(self, protocol: str) -> tuple[bytes, type[Receiver], bool]:
        if protocol == "ws":
            return ws_request(self.port, self.ws_path, self.token), WSClient, True
        return sse_request(self.port, self.sse_path, self.token), SSEClient, self.ready_on_headers


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
    setup_seconds: float = float("nan")  # N clients connected (streams begun) in this time
    setup_client_cpu: float = float("nan")  # this process's CPU seconds meanwhile
    setup_server_cpu: float = float("nan")  # the server's CPU seconds meanwhile
    server: str = "gateway"
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def per_cpu_second(self) -> float:
        return self.deliveries / self.server_cpu if self.server_cpu else float("nan")

    def progress(self) -> str:
        return (
            f"{self.server}: N={self.clients}, {self.rate:g} events/s: "
            f"{self.deliveries}/{self.clients * self.events} deliveries, "
            f"{self.per_cpu_second:,.0f} per server CPU-second, "
            f"p99 {self.latency.p99_ms:.1f} ms, {self.kb_per_conn:.1f} KiB/conn, "
            f"connected in {self.setup_seconds:.2f} s "
            f"(server CPU {self.setup_server_cpu:.2f} s, "
            f"clients' CPU {self.setup_client_cpu:.2f} s)"
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
        label = f"{self.server} N={self.clients}"
        return shortfall(label, self.missing, self.cut, self.out_of_order)


def make_payload(seq: int, pad: str) -> str:
    return json.dumps({"seq": seq, "t": time.time_ns(), "pad": pad}, separators=(",", ":"))


async def run_round(
    target: Target,
    n: int,
    events: int,
    rate: float,
    payload: int,
    drain: float,
    *,
    protocol: str = "sse",
    at_once: int = 64,
) -> Result:
    request, kind, on_headers = target.request(protocol)
    pad = "x" * max(0, payload - len(make_payload(0, "")))
    tally = Tally(n * events)
    clients: list[Receiver] = []
    headers = {"Authorization": f"Bearer {target.token}"} if target.token else {}
    options = {"kind": kind, "ready_on_headers": on_headers}
    # No keepalive pings: a starved client (a loaded machine) must not cut the publisher.
    async with connect(target.publish_url, additional_headers=headers, ping_interval=None) as ws:
        # One connection first (the hub now exists), then the baseline, then the other N-1.
        await open_clients(target.port, request, 1, tally, clients, **options)  # type: ignore[arg-type]
        await asyncio.sleep(0.5)
        base_rss = target.rss_kb()
        setup0, client0, server0 = time.perf_counter(), time.process_time(), sum(target.cpu())
        await open_clients(
            target.port,
            request,
            n - 1,
            tally,
            clients,
            at_once=at_once,
            **options,  # type: ignore[arg-type]
        )
        setup = time.perf_counter() - setup0
        setup_client = time.process_time() - client0
        setup_server = sum(target.cpu()) - server0
        await asyncio.sleep(1.0)
        kb_per_conn = (target.rss_kb() - base_rss) / max(1, n - 1)

        # Warm-up: a few events every client must see before the measured phase.
        tally.warm_target = n * WARMUP_EVENTS
        for i in range(WARMUP_EVENTS):
            await ws.send(make_payload(-1 - i, pad))
        await asyncio.wait_for(tally.warmed.wait(), 60)
        await asyncio.sleep(0.2)

        cpu0 = target.cpu()
        core0 = core_busy_seconds(target.core)
        bench0 = time.process_time()
        tally.writes = 0
        wall0 = time.perf_counter()
        async for seq in paced(events, rate):
            await ws.send(make_payload(seq, pad))
        # Every client has every event, or the deadline after the last publish.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tally.done.wait(), drain)
        wall = time.perf_counter() - wall0
        cpu1 = target.cpu()
        user, system = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
        core1 = core_busy_seconds(target.core)
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
        setup_seconds=setup,
        setup_client_cpu=setup_client,
        setup_server_cpu=setup_server,
        server=target.name,
    )
