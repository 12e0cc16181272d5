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
import importlib.metadata
import json
import os
import platform
import resource
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from array import array
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parent.parent
CLIENT_ID = "bench"
SSE_PATH = "/bench-sse/1/events"
WS_PATH = "/bench-ws/1/publish"
WARMUP_EVENTS = 20
DEFAULT_CLIENTS = [100, 1000]
DEFAULT_DELIVERY_RATES = [20_000.0, 50_000.0, 100_000.0]
SERVE = [sys.executable, "-m", "gateway.cli", "serve"]


# --- machine ----------------------------------------------------------------------------------


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def pick_cores() -> tuple[int | None, int | None]:
    """(server core, client core), or (None, None) when fewer than two cores are usable."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None, None
    return cores[0], cores[1]


def server_cpu_seconds(pid: int) -> tuple[float, float]:
    """(utime, stime) of the whole process (all threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def core_busy_seconds(core: int | None) -> float:
    """Busy seconds (user, nice, system, irq, softirq) of one core, all cores when None.

    Loopback TCP work that the kernel defers to ksoftirqd is not charged to the server
    process, so the busy time of the server's core is reported next to the process's own
    CPU time. It also counts anything else that ran on that core.
    """
    name = "cpu" if core is None else f"cpu{core}"
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields[0] == name:
            user, nice, system, _idle, _iowait, irq, softirq = map(int, fields[1:8])
            return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")
    raise RuntimeError(f"no {name} in /proc/stat")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


# --- server -----------------------------------------------------------------------------------


def bench_config(port: int, secret: str, state: Path, queue: int) -> dict[str, object]:
    return {
        "gateway": {
            "public_url": f"http://127.0.0.1:{port}",
            "state": f"sqlite:///{state}",
            "client_queue": queue,
        },
        "brokers": {"bench": {"type": "memory"}},
        "tiers": {"Unlimited": {}},
        "apis": [
            {
                "name": "BenchSSE",
                "version": "1",
                "context": "/bench-sse",
                "protocol": "sse",
                "broker": "bench",
                "tiers": ["Unlimited"],
                "topics": [{"name": "/events", "channel": "bench.events"}],
            },
            {
                "name": "BenchWS",
                "version": "1",
                "context": "/bench-ws",
                "protocol": "websocket",
                "broker": "bench",
                "tiers": ["Unlimited"],
                "topics": [{"name": "/publish", "mode": "publish", "channel": "bench.events"}],
            },
        ],
        "applications": [
            {
                "name": "bench",
                "client_id": CLIENT_ID,
                "client_secret": secret,
                "subscriptions": [
                    {"api": "BenchSSE", "version": "1", "tier": "Unlimited"},
                    {"api": "BenchWS", "version": "1", "tier": "Unlimited"},
                ],
            }
        ],
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, workdir: Path, core: int | None, queue: int, root: Path = ROOT) -> None:
        self.root = root
        self.port = free_port()
        self.secret = secrets.token_urlsafe(18)
        self.config = workdir / f"bench-{self.port}.yaml"
        self.config.write_text(
            yaml.safe_dump(
                bench_config(self.port, self.secret, workdir / f"state-{self.port}.db", queue)
            )
        )
        self.log = workdir / f"server-{self.port}.log"
        self.core = core
        self.proc: subprocess.Popen[bytes] | None = None

    def _preexec(self) -> None:
        raise_nofile()
        if self.core is not None:
            os.sched_setaffinity(0, {self.core})

    def start(self) -> None:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [*SERVE, "--config", str(self.config), "--port", str(self.port)],
                cwd=self.root,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=self._preexec,  # this process has no other threads
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited; see {self.log}:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(self.url("/healthz"), timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not start; see {self.log}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def token(self) -> str:
        body = urllib.parse.urlencode(
            {
                "grant_type": "client_credentials",
                "client_id": CLIENT_ID,
                "client_secret": self.secret,
            }
        ).encode()
        request = urllib.request.Request(
            self.url("/oauth2/token"),
            data=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            return str(json.load(resp)["access_token"])

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- clients ----------------------------------------------------------------------------------


class Tally:
    """What every client of a round adds to; the publisher waits on ``done``."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.deliveries = 0
        self.warm = 0
        self.latencies_us = array("q")
        self.out_of_order = 0
        self.writes = 0
        self.done = asyncio.Event()
        self.warm_target = 0
        self.warmed = asyncio.Event()


def stamp(data: bytes) -> tuple[int, int]:
    """(seq, publish time_ns) of a payload: a cheap scan, JSON decoding as the fallback.

    The gateway re-serialises JSON payloads compactly with keys in order, so the fields
    come out as ``{"seq":N,"t":T,...}``; anything else is decoded properly.
    """
    if data.startswith(b'{"seq":'):
        comma = data.find(b",", 7)
        if data.startswith(b'"t":', comma + 1):
            end = data.find(b",", comma + 5)
            if end > 0:
                return int(data[7:comma]), int(data[comma + 5 : end])
    payload = json.loads(data)
    return int(payload["seq"]), int(payload["t"])


class SSEClient(asyncio.Protocol):
    """One raw HTTP/1.1 SSE connection: status line, headers, chunked body, events."""

    def __init__(self, request: bytes, tally: Tally) -> None:
        self.request = request
        self.tally = tally
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.raw = bytearray()  # bytes not yet through the HTTP framing
        self.headers_done = False
        self.chunked = False
        self.chunk_left = 0  # data bytes left in the current chunk
        self.skip = 0  # CRLF bytes left after a chunk
        self.text = b""  # body bytes not yet split into events
        self.next_seq = 0
        self.lost = False
        self.ended = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before the stream began: {exc}"))

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        self.raw += data
        if not self.headers_done and not self._headers():
            return
        body = self._dechunk() if self.chunked else self._take_all()
        if body:
            self._events(body, now)

    # HTTP framing
    def _headers(self) -> bool:
        end = self.raw.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self.raw[:end]).decode("latin-1").split("\r\n")
        del self.raw[: end + 4]
        status = head[0].split(" ", 2)
        if len(status) < 2 or status[1] != "200":
            self.ready.set_exception(ConnectionError(f"HTTP answer {head[0]!r}"))
            assert self.transport is not None
            self.transport.close()
            return False
        fields = {
            k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])
        }
        self.chunked = "chunked" in fields.get("transfer-encoding", "").lower()
        self.headers_done = True
        return True

    def _take_all(self) -> bytes:
        body = bytes(self.raw)
        self.raw.clear()
        return body

    def _dechunk(self) -> bytes:
        raw = self.raw
        out: list[bytes] = []
        pos = 0
        size = len(raw)
        while pos < size:
            if self.skip:
                n = min(self.skip, size - pos)
                pos += n
                self.skip -= n
            elif self.chunk_left:
                n = min(self.chunk_left, size - pos)
                out.append(bytes(raw[pos : pos + n]))
                pos += n
                self.chunk_left -= n
                if not self.chunk_left:
                    self.skip = 2
            else:
                end = raw.find(b"\r\n", pos)
                if end < 0:
                    break
                length = int(bytes(raw[pos:end]).split(b";", 1)[0], 16)
                pos = end + 2
                if length == 0:
                    self.ended = True
                    break
                self.chunk_left = length
                self.tally.writes += 1  # one HTTP chunk per server write (ASGI send)
        del raw[:pos]
        return b"".join(out)

    # event stream (the server writes LF line ends; blocks end with an empty line)
    def _events(self, body: bytes, now: int) -> None:
        blocks = (self.text + body if self.text else body).split(b"\n\n")
        self.text = blocks.pop()  # an event is complete only at its empty line
        latencies: list[int] = []
        next_seq = self.next_seq
        warm = disorder = 0
        for block in blocks:
            eol = block.find(b"\n")
            if (
                block.startswith(b"id: ")
                and block.startswith(b"data: ", eol + 1)
                and block.find(b"\n", eol + 1) < 0
            ):
                data: bytes | None = block[eol + 7 :]  # the usual shape: one id, one data line
            else:
                data = self._data(block)
            if data is None:
                continue
            seq, published = stamp(data)
            if seq < 0:
                warm += 1
                continue
            if seq != next_seq:
                disorder += 1
            next_seq = seq + 1
            latencies.append((now - published) // 1000)
        self.next_seq = next_seq
        tally = self.tally
        if warm:
            tally.warm += warm
            if tally.warm >= tally.warm_target:
                tally.warmed.set()
        if latencies:
            tally.out_of_order += disorder
            tally.latencies_us.extend(latencies)
            tally.deliveries += len(latencies)
            if tally.deliveries >= tally.expected:
                tally.done.set()

    def _data(self, block: bytes) -> bytes | None:
        """Any other block (WHATWG field parsing): data lines joined, comments skipped."""
        data: bytes | None = None
        for line in block.split(b"\n"):
            field, colon, value = line.partition(b":")
            if colon and value[:1] == b" ":
                value = value[1:]
            if field == b"data":
                data = value if data is None else data + b"\n" + value
            elif field == b"retry" and not self.ready.done():
                self.ready.set_result(None)
        return data

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_clients(
    port: int, token: str, count: int, tally: Tally, clients: list[SSEClient]
) -> None:
    loop = asyncio.get_running_loop()
    request = (
        f"GET {SSE_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    gate = asyncio.Semaphore(64)

    async def one() -> None:
        async with gate:
            client = SSEClient(request, tally)
            await loop.create_connection(lambda: client, "127.0.0.1", port)
            clients.append(client)
            await asyncio.wait_for(client.ready, 30)

    await asyncio.gather(*(one() for _ in range(count)))


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
    p50_ms: float
    p99_ms: float
    max_ms: float
    kb_per_conn: float

    @property
    def per_cpu_second(self) -> float:
        return self.deliveries / self.server_cpu if self.server_cpu else float("nan")


def make_payload(seq: int, pad: str) -> str:
    return json.dumps({"seq": seq, "t": time.time_ns(), "pad": pad}, separators=(",", ":"))


async def run_round(
    server: Server, n: int, events: int, rate: float, payload: int, drain: float
) -> Result:
    token = server.token()
    pad = "x" * max(0, payload - len(make_payload(0, "")))
    tally = Tally(n * events)
    clients: list[SSEClient] = []
    headers = {"Authorization": f"Bearer {token}"}
    async with connect(f"ws://127.0.0.1:{server.port}{WS_PATH}", additional_headers=headers) as ws:
        # One connection first (the hub now exists), then the baseline, then the other N-1.
        await open_clients(server.port, token, 1, tally, clients)
        await asyncio.sleep(0.5)
        base_rss = rss_kb(server.pid)
        await open_clients(server.port, token, n - 1, tally, clients)
        await asyncio.sleep(1.0)
        idle_rss = rss_kb(server.pid)
        kb_per_conn = (idle_rss - base_rss) / max(1, n - 1)

        # Warm-up: a few events every client must see before the measured phase.
        tally.warm_target = n * WARMUP_EVENTS
        for i in range(WARMUP_EVENTS):
            await ws.send(make_payload(-1 - i, pad))
        await asyncio.wait_for(tally.warmed.wait(), 60)
        await asyncio.sleep(0.2)

        loop = asyncio.get_running_loop()
        cpu0 = server_cpu_seconds(server.pid)
        core0 = core_busy_seconds(server.core)
        bench0 = time.process_time()
        tally.writes = 0
        wall0 = time.perf_counter()
        start = loop.time()
        for seq in range(events):
            delay = start + seq / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await ws.send(make_payload(seq, pad))
        # Every client has every event, or the deadline after the last publish.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tally.done.wait(), drain)
        wall = time.perf_counter() - wall0
        cpu1 = server_cpu_seconds(server.pid)
        user, system = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
        core1 = core_busy_seconds(server.core)
        bench_cpu = time.process_time() - bench0
    cut = sum(1 for c in clients if c.lost or c.ended)
    for client in clients:
        client.close()
    lat = sorted(tally.latencies_us)

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] / 1000 if lat else float("nan")

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
        p50_ms=pct(0.50),
        p99_ms=pct(0.99),
        max_ms=lat[-1] / 1000 if lat else float("nan"),
        kb_per_conn=kb_per_conn,
    )


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


def row(r: Result) -> list[str]:
    return [
        str(r.clients),
        f"{r.rate:g}",
        str(r.events),
        str(r.deliveries),
        f"{r.missing} / {r.cut}",
        f"{r.deliveries / r.writes:.2f}" if r.writes else "n/a",
        f"{r.wall:.1f}",
        f"{r.server_cpu:.2f} ({r.server_user:.2f}+{r.server_cpu - r.server_user:.2f})",
        f"{100 * r.server_cpu / r.wall:.0f}",
        f"**{r.per_cpu_second:,.0f}**",
        f"{r.deliveries / r.core_busy:,.0f}" if r.core_busy else "n/a",
        f"{r.p50_ms:.1f}",
        f"{r.p99_ms:.1f}",
        f"{r.max_ms:.1f}",
        f"{r.kb_per_conn:.1f}",
        f"{100 * r.bench_cpu / r.wall:.0f}",
    ]


def table(results: list[Result]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row(r)) + " |" for r in results]
    return "\n".join(lines)


def event_loop() -> tuple[Callable[[Coroutine[Any, Any, Result]], Result], str]:
    """uvloop when installed (uvicorn[standard] brings it; the server uses it too)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run, "asyncio"
    return uvloop.run, f"uvloop {importlib.metadata.version('uvloop')}"


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
    print(
        f"{cpu_model()}, nproc {os.cpu_count()}, Python {platform.python_version()}; "
        f"{pinning}; client loop {loop_name}",
        flush=True,
    )
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="streambridge-bench-") as tmp:
        for n, rate, count in rounds:
            server = Server(Path(tmp), server_core, args.queue, args.server_root.resolve())
            server.start()
            try:
                coro = run_round(server, n, count, rate, args.payload, args.timeout)
                result = run(coro)
            finally:
                server.stop()
            results.append(result)
            print(
                f"N={n}, {rate:g} events/s: {result.deliveries}/{n * count} deliveries, "
                f"{result.per_cpu_second:,.0f} per server CPU-second",
                flush=True,
            )
    print()
    print(table(results))
    bad = [r for r in results if r.missing or r.cut or r.out_of_order]
    for r in bad:
        print(
            f"N={r.clients}: {r.missing} deliveries missing, {r.cut} clients cut, "
            f"{r.out_of_order} out of order"
        )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
