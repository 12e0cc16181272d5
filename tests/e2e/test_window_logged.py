"""CONTRACT §11: windows over an MQTT channel in a cluster, through the cluster log.

A third-party client publishes to Mosquitto; the gateway's copier copies the channel into
its cluster log topic although no client streams the channel itself (only its windows);
a ``streambridge worker`` windows the log (dropping the copier's markers) and writes
each closed window to ``sb.win.<api>.<version>.<topic>``; an SSE client of the gateway
gets every (group, window) once, with the sums and counts published.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from bridge.window_topics import cluster_log_topic
from tests.e2e.helpers import KAFKA, eventually, fetch_token, sse_stream
from tests.e2e.servers import running_server, write_config
from tests.e2e.test_window_workers import SECRET, cluster_config
from tests.e2e.workers import BYTECODE_CACHE, SESSION_TIMEOUT, running_workers

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]

REGIONS = ("eu", "us", "asia")
EVENTS = 60
EXPIRES = SESSION_TIMEOUT + 1  # the shortest the worker takes (one worker, never killed)


def logged_config(directory: Path, api: str, channel: str) -> dict[str, Any]:
    """The windows of test_window_workers over an MQTT channel instead of a Kafka topic."""
    config = cluster_config(directory, api, channel)
    config["cluster"]["node_ttl"] = "3s"
    config["brokers"]["mqtt"] = {"type": "mqtt", "url": "mqtt://127.0.0.1:1883", "qos": 1}
    config["apis"][0]["broker"] = "mqtt"
    return config


async def log_end(topic: str) -> int:
    """The end offset of the cluster log topic (0 while it does not exist)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=KAFKA, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        if topic not in await consumer.topics():
            return 0
        partition = TopicPartition(topic, 0)
        return int((await consumer.end_offsets([partition]))[partition])
    finally:
        await consumer.stop()


async def test_mqtt_windows_run_in_a_worker_over_the_cluster_log(tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:10]
    api, channel = f"mwin{suffix}", f"mwin/{suffix}/sales"
    path = f"/{api}/1.0.0/stats"
    config = logged_config(tmp_path, api, channel)
    config_path = write_config(tmp_path, config, "worker.yaml")
    with (
        running_workers(tmp_path, config_path, f"sbtest-{suffix}", 1, expires=EXPIRES) as workers,
        running_server(tmp_path / "gw", config, env=BYTECODE_CACHE, startup=60) as gateway,
    ):

        async def copying() -> bool:  # the copier's marker: it has subscribed to Mosquitto
            return await log_end(cluster_log_topic("mqtt", channel)) > 0

        async def worker_ready() -> bool:  # its topics created, its partition recovered
            assert workers[0].process.poll() is None, workers[0].log()
            return workers[0].groups_partitions() == "0"

        await eventually(copying, timeout=30, what="the gateway copying a channel nobody streams")
        await eventually(worker_ready, timeout=60, what="the worker holding its partition")
        token = await fetch_token(gateway.base_url, "dash", SECRET)
        expected: dict[str, list[int]] = {region: [0, 0] for region in REGIONS}
        async with (
            sse_stream(gateway.base_url, path, token) as stream,
            aiomqtt.Client("127.0.0.1", 1883, identifier=f"p-{suffix}") as mqtt,
        ):
            for n in range(EVENTS):
                region = REGIONS[n % len(REGIONS)]
                amount = 0 if n % 7 == 0 else 1 + n % 20  # 0: filtered out before the window
                await mqtt.publish(channel, json.dumps({"region": region, "amount": amount}), qos=1)
                if amount:
                    expected[region][0] += amount
                    expected[region][1] += 1
                await asyncio.sleep(0.02)  # spreads the events over two windows or three
            got: dict[str, list[int]] = {region: [0, 0] for region in REGIONS}
            windows: Counter[tuple[str, str]] = Counter()
            ids: list[str] = []
            # Each window closes EXPIRES after its end; read until every sum is reached.
            while any(got[r][1] < expected[r][1] for r in REGIONS):
                event = await stream.next_event(timeout=EXPIRES + 20)
                assert event is not None, f"the stream ended with {got} of {expected}"
                window = json.loads(event.data)
                windows[(window["group"], window["window_start"])] += 1
                got[window["group"]][0] += window["total"]
                got[window["group"]][1] += window["n"]
                ids.append(event.id or "")
        assert got == expected, "the windows' sums and counts are what was published"
        assert max(windows.values()) == 1, f"a (group, window) emitted twice: {windows}"
        assert all(".k1:" in i for i in ids), f"window outputs carry broker offsets: {ids}"
