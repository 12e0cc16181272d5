"""Webhook delivery benchmark (issue 5 part 6): signed POSTs to a local receiver.

One command (about a minute)::

    .venv/bin/python bench/webhooks.py

Two parts, each against a receiver process of its own (raw asyncio + uvloop, answers
``204`` to every POST, keep-alive), pinned to the second core:

1. ``client``: the delivery path of the gateway in this process, pinned to the first
   core — :class:`gateway.websub.delivery.Deliverer` (the checked target, the
   ``X-Hub-Signature`` and Standard Webhooks signatures over the body, ``Link`` and
   ``webhook-*`` headers) through the pooled keep-alive :class:`CallbackClient`, with
   ``--concurrency`` subscriptions delivering at once. Reported: deliveries per CPU-second
   of this process (``time.process_time``) and per wall second.
2. ``gateway``: a real ``streambridge serve`` (SQLite state store, memory broker) pinned
   to the first core, ``--subscriptions`` verified WebSub subscriptions with secrets and
   ``hub.signature=standard``, ``--events`` events published through a WebSocket publish
   topic on the same channel. Every delivery goes through the durable queue (batched
   inserts before the first attempt, batched deletes after the 2xx). Reported: deliveries
   per gateway CPU-second (``/proc/<pid>/stat`` utime+stime from the first publish until
   the receiver has every delivery) and per wall second. The memory broker keeps
   100,000 events per channel, so the burst of publishes is never cut by its replay log.

``BENCH_PROFILE=/tmp/gw.prof`` runs the gateway of part 2 under cProfile.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import uvloop
from harness.gateway import ROOT, Gateway, api
from harness.machine import free_port, pick_cores, server_cpu_seconds, thread_cpu_seconds
from websockets.asyncio.client import connect

sys.path.insert(0, str(ROOT))

from gateway.websub.client import CallbackClient
from gateway.websub.delivery import Deliverer
from gateway.websub.guard import CallbackGuard

NO_CONTENT = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
PAYLOAD = json.dumps({"symbol": "ACME", "price": 101.25, "volume": 300, "seq": 0}).encode()


# --- the receiver ---------------------------------------------------------------------


def receiver(port: int, core: int | None, counter: Any) -> None:
    """Answers 204 to POSTs and the challenge to verification GETs; counts POSTs."""
    if core is not None:
        os.sched_setaffinity(0, {core})

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
                if head.startswith(b"GET"):
                    target = head.split(b" ", 2)[1].decode()
                    query = dict(
                        p.split("=", 1) for p in target.partition("?")[2].split("&") if "=" in p
                    )
                    body = query.get("hub.challenge", "").encode()
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                    )
                else:
                    with counter.get_lock():
                        counter.value += 1
                    writer.write(NO_CONTENT)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
        await server.serve_forever()

    uvloop.run(main())


# --- part 1: the delivery path in-process ------------------------------------------------------


async def client_round(port: int, deliveries: int, concurrency: int) -> dict[str, float]:
    guard = CallbackGuard(allow_private=True)
    async with CallbackClient() as client:
        deliverer = Deliverer(client, guard, timeout=10.0)
        hub, topic = "http://127.0.0.1:8080/t/1.0.0/hub", "http://127.0.0.1:8080/t/1.0.0/x"
        link = f'<{hub}>; rel="hub", <{topic}>; rel="self"'

        async def subscription(index: int, count: int) -> None:
            callback = f"http://127.0.0.1:{port}/cb/{index}?sub={index}"
            for n in range(count):
                outcome = await deliverer.deliver(
                    callback=callback,
                    body=PAYLOAD,
                    content_type="application/json",
                    link=link,
                    secret="a-subscriber-secret-of-32-bytes!",
                    style="standard",
                    webhook_id=f"msg_{index}_{n}",
                )
                assert outcome.delivered, outcome

        await subscription(0, 200)  # warm-up: connections open, code paths hot
        per = deliveries // concurrency
        wall0, cpu0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(subscription(i, per) for i in range(concurrency)))
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    total = per * concurrency
    return {
        "deliveries": total,
        "wall": wall,
        "cpu": cpu,
        "per_cpu": total / cpu,
        "per_wall": total / wall,
    }


# --- part 2: through a real gateway ------------------------------------------------------------


def configure(server: Gateway) -> None:
    """A WebSub API and a WebSocket publish API on one memory channel (100,000 kept)."""
    replay = {"max_events": 100_000}
    server.configure(
        {"type": "memory"},
        [
            api("Ticks", "websub", "bench.ticks", version="1.0.0", topic="/all", replay=replay),
            api(
                "In",
                "websocket",
                "bench.ticks",
                version="1.0.0",
                topic="/all",
                mode="publish",
                replay=replay,
            ),
        ],
        client_queue=100000,
        websub={"allow_private_callbacks": True},
    )


async def gateway_round(
    server: Gateway, receiver_port: int, counter: Any, subscriptions: int, events: int
) -> dict[str, float]:
    token = server.token()
    auth = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server.url(""), timeout=10) as http:
        for i in range(subscriptions):
            form = {
                "hub.mode": "subscribe",
                "hub.topic": "/all",
                "hub.callback": f"http://127.0.0.1:{receiver_port}/cb/{i}",
                "hub.secret": f"secret-{i:04d}-padding-to-32-byte",
                "hub.signature": "standard",
            }
            answer = await http.post("/ticks/1.0.0/hub", data=form, headers=auth)
            assert answer.status_code == 202, answer.text
        await asyncio.sleep(1.0)  # verifications (the receiver echoes every challenge)
    expected = subscriptions * events
    with counter.get_lock():
        counter.value = 0
    async with connect(server.ws_url("/in/1.0.0/all"), additional_headers=auth) as ws:
        cpu0, wall0 = sum(server_cpu_seconds(server.pid)), time.perf_counter()
        for n in range(events):
            await ws.send(json.dumps({"symbol": "ACME", "price": 101.25, "seq": n}))
            if n % 200 == 199:
                await asyncio.sleep(0)  # let the socket drain
        deadline = time.monotonic() + 120
        # the counter lives in the receiver process: polled, not awaited
        while counter.value < expected and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        wall, cpu = time.perf_counter() - wall0, sum(server_cpu_seconds(server.pid)) - cpu0
        threads = thread_cpu_seconds(server.pid)  # since start, for the split
    got = counter.value
    if got < expected:
        print(server.log.read_text()[-3000:], file=sys.stderr)
    print("# gateway CPU-s by thread since start:", json.dumps(threads), file=sys.stderr)
    return {
        "deliveries": got,
        "expected": expected,
        "wall": wall,
        "cpu": cpu,
        "per_cpu": got / cpu,
        "per_wall": got / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--deliveries", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, action="append")
    parser.add_argument("--subscriptions", type=int, default=20)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--skip-gateway", action="store_true")
    args = parser.parse_args()
    bench_core, receiver_core = pick_cores()
    counter = multiprocessing.Value("q", 0)
    port = free_port()
    recv = multiprocessing.Process(
        target=receiver, args=(port, receiver_core, counter), daemon=True
    )
    recv.start()
    time.sleep(0.5)
    print(
        f"# Python {platform.python_version()} on {os.cpu_count()} cores; "
        f"bench core {bench_core}, receiver core {receiver_core}"
    )
    try:
        for concurrency in args.concurrency or [1, 16, 64]:
            if bench_core is not None:
                os.sched_setaffinity(0, {bench_core})
            result = uvloop.run(client_round(port, args.deliveries, concurrency))
            print(
                f"client  concurrency={concurrency:3d}  "
                f"{result['deliveries']:.0f} signed deliveries  "
                f"wall {result['wall']:.2f}s  cpu {result['cpu']:.2f}s  "
                f"{result['per_cpu']:,.0f}/cpu-s  {result['per_wall']:,.0f}/s"
            )
        if not args.skip_gateway:
            if receiver_core is not None:  # the publisher shares the receiver's core
                os.sched_setaffinity(0, {receiver_core})
            with tempfile.TemporaryDirectory(prefix="streambridge-webhooks-") as tmp:
                # BENCH_PROFILE=<file>: the gateway runs under cProfile
                server = Gateway(Path(tmp), bench_core, profile=os.environ.get("BENCH_PROFILE"))
                configure(server)
                with server:
                    result = uvloop.run(
                        gateway_round(server, port, counter, args.subscriptions, args.events)
                    )
            print(
                f"gateway subscriptions={args.subscriptions} events={args.events}  "
                f"{result['deliveries']:.0f}/{result['expected']:.0f} deliveries  "
                f"wall {result['wall']:.2f}s  gateway cpu {result['cpu']:.2f}s  "
                f"{result['per_cpu']:,.0f}/cpu-s  {result['per_wall']:,.0f}/s"
            )
    finally:
        recv.kill()


if __name__ == "__main__":
    main()
