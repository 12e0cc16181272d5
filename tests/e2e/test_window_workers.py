"""CONTRACT §11: window steps run in ``streambridge worker`` processes (faust-streaming).

Two workers share a 2-partition source topic. One is killed with ``kill -9`` while events
flow; the other takes its partitions over, restores their windows from the changelog
and counts what the killed one had not committed. Every (group, window) is then emitted
exactly once to ``sb.win.<api>.<version>.<topic>``, with the sums and counts produced.

Gateways configured with ``cluster`` serve that topic: an SSE client gets the windows
with broker-offset ids, and resumes from one of them on another gateway with exactly the
windows after it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition

from connectors.kafka_consumer import started_consumer
from tests.e2e.helpers import KAFKA, eventually, fetch_token, kafka_producer, sse_stream
from tests.e2e.servers import ROOT, running_server, state_url, write_config
from tests.e2e.workers import BYTECODE_CACHE, EXPIRES, running_workers

pytestmark = pytest.mark.broker

SECRET = "windows-secret-01"
WINDOW = 1  # seconds
REGIONS = ("eu", "us", "asia", "af")
RATE = 1 / 40  # seconds between events
AFTER_KILL = 1.5  # seconds of events after the kill


def cluster_config(directory: Path, api: str, source: str) -> dict[str, Any]:
    return {
        "gateway": {"public_url": "http://127.0.0.1:8080", "state": state_url(directory)},
        "cluster": {"log": "kafka"},
        "brokers": {"kafka": {"type": "kafka", "bootstrap": KAFKA}},
        "tiers": {"Unlimited": {}},
        "apis": [
            {
                "name": api,
                "version": "1.0.0",
                "context": f"/{api}",
                "broker": "kafka",
                "topics": [
                    {
                        "name": "/stats",
                        "channel": source,
                        "pipeline": [
                            {"filter": "data.amount > 0"},
                            {
                                "window": {
                                    "tumbling": f"{WINDOW}s",
                                    "group_by": "data.region",
                                    "aggregate": {"total": "sum(data.amount)", "n": "count()"},
                                }
                            },
                        ],
                    }
                ],
            }
        ],
        "applications": [
            {
                "name": "dash",
                "client_id": "dash",
                "client_secret": SECRET,
                "subscriptions": [{"api": api, "version": "1.0.0", "tier": "Unlimited"}],
            }
        ],
    }


def iso(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


async def produce(source: str, stop: asyncio.Event) -> dict[tuple[str, str], list[int]]:
    """Events at a steady rate over both partitions until ``stop``; the expected
    [sum, count] per (group, window start). Every 17th (amount 0) is filtered out."""
    expected: dict[tuple[str, str], list[int]] = {}
    async with kafka_producer() as producer:
        n = 0
        while not stop.is_set():
            region = REGIONS[n % len(REGIONS)]
            amount = 0 if n % 17 == 0 else 1 + n % 50
            now_ms = int(time.time() * 1000)
            await producer.send_and_wait(
                source,
                json.dumps({"region": region, "amount": amount}).encode(),
                partition=n % 2,
                timestamp_ms=now_ms,
            )
            if amount:
                window = (region, iso(now_ms // 1000 // WINDOW * WINDOW))
                total = expected.setdefault(window, [0, 0])
                total[0] += amount
                total[1] += 1
            n += 1
            await asyncio.sleep(RATE)
    return expected


async def output_records(topic: str) -> list[dict[str, Any]]:
    """Everything in the worker's output topic now."""
    settings = {"bootstrap_servers": KAFKA, "group_id": None, "enable_auto_commit": False}
    async with started_consumer(**settings) as consumer:
        tps = [TopicPartition(topic, p) for p in (0, 1)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records: list[dict[str, Any]] = []
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            batch = await consumer.getmany(*tps, timeout_ms=200)
            records += [json.loads(r.value) for rs in batch.values() for r in rs]
        return records


def windows(records: list[dict[str, Any]]) -> Counter[tuple[str, str, int, int]]:
    return Counter((r["group"], r["window_start"], r["total"], r["n"]) for r in records)


@pytest.mark.timeout(240)  # 4 processes, a rebalance after a kill, then EXPIRES: ~90 s
async def test_two_workers_and_a_kill_emit_every_window_once_with_exact_sums(
    tmp_path: Path,
) -> None:
    suffix = uuid.uuid4().hex[:10]
    api, source = f"win{suffix}", f"win-src-{suffix}"
    output = f"sb.win.{api}.1.0.0.stats"
    path = f"/{api}/1.0.0/stats"
    config = cluster_config(tmp_path / "a", api, source)
    (tmp_path / "a").mkdir()
    config_path = write_config(tmp_path, config, "worker.yaml")
    other_config = cluster_config(tmp_path / "b", api, source)
    with (  # the gateways first, one by one: processes starting at once on 2 cores are slow
        running_server(tmp_path / "a", config, env=BYTECODE_CACHE, startup=60) as gateway,
        running_server(tmp_path / "b", other_config, env=BYTECODE_CACHE, startup=60) as other,
        running_workers(tmp_path, config_path, f"sbtest-{suffix}", 2) as workers,
    ):

        async def balanced() -> bool:
            held = [w.groups_partitions() for w in workers]
            return sorted(h or "" for h in held) == ["0", "1"]

        await eventually(balanced, timeout=60, what="each worker holding one partition")
        token = await fetch_token(gateway.base_url, "dash", SECRET)
        async with sse_stream(gateway.base_url, path, token) as stream:
            stop = asyncio.Event()
            producing = asyncio.create_task(produce(source, stop))

            async def emitted() -> bool:  # the first windows end EXPIRES after they close
                return "windows closed" in workers[0].log()

            # Killed once it has written windows: the survivor must not write them again.
            await eventually(emitted, timeout=EXPIRES + 20, what="windows from the first worker")
            workers[0].process.send_signal(signal.SIGKILL)
            await asyncio.sleep(AFTER_KILL)  # events flow on meanwhile: not a synchronisation
            stop.set()
            expected = await producing
            want = Counter((g, start, s, n) for (g, start), (s, n) in expected.items())
            # The last window closes EXPIRES after its end, later still on a stalled partition.
            received = await stream.events(sum(want.values()), timeout=EXPIRES + 30)
        got = windows([json.loads(e.data) for e in received])
        assert got == want, "every (group, window) once, with the sums produced"
        assert windows(await output_records(output)) == want, "nothing doubled in Kafka either"
        assert workers[1].groups_partitions() == "0-1", "the survivor took the partition over"
        ids = [e.id for e in received]
        assert all(i and ".k1:" in i for i in ids), "window outputs carry broker offsets"

        # Resume on another gateway from the id of a window in the middle.
        middle = len(received) // 2
        token = await fetch_token(other.base_url, "dash", SECRET)
        resume = {"Last-Event-ID": ids[middle]}
        async with sse_stream(other.base_url, path, token, headers=resume) as again:
            rest = await again.events(len(received) - middle - 1, timeout=10)
        assert windows([json.loads(e.data) for e in rest]) == windows(
            [json.loads(e.data) for e in received[middle + 1 :]]
        ), "exactly the windows after the resume id"


def test_a_worker_without_cluster_or_windows_exits_2_naming_why(tmp_path: Path) -> None:
    config = cluster_config(tmp_path, "nocluster", "nowhere")
    del config["cluster"]
    without_cluster = write_config(tmp_path, config, "no-cluster.yaml")
    config = cluster_config(tmp_path, "nowindow", "nowhere")
    config["apis"][0]["topics"][0]["pipeline"] = [{"filter": "true"}]
    without_window = write_config(tmp_path, config, "no-window.yaml")
    for path, named in ((without_cluster, "cluster:"), (without_window, "apis:")):
        done = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "worker", "--config", str(path)],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith(named)
