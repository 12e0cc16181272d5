"""Where a topic's window runs (CONTRACT §11): in the gateway, or in ``streambridge worker``.

Without ``cluster``, a window step runs inside each gateway's hub, as before. With
``cluster``, the steps up to and including a topic's first window run in the Faust
workers, which write each closed window once to the derived Kafka topic
``sb.win.<api>.<version>.<topic>`` (key: the group). Gateways read that topic like any
Kafka topic and run only the steps after the window, so window outputs carry broker
offsets as ids, valid on every node.

The source of a worker is the topic's Kafka channel, or, for an MQTT/AMQP/memory
channel, its copy in the cluster log (``cluster.log``). Topics whose channel takes path
parameters stay in the gateway: a worker cannot know which channels clients will ask for.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from bridge.config import Api, Config, Step, Topic, WindowSpec, WindowStep

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def kafka_name(*parts: str) -> str:
    """Parts joined by dots, each reduced to the characters Kafka allows in a topic name."""
    return ".".join(_UNSAFE.sub("_", part).strip("_") or "_" for part in parts)[:249]


def window_topic(api: str, version: str, topic: str) -> str:
    """The derived topic a worker writes a topic's closed windows to."""
    return kafka_name("sb", "win", api, version, topic.lstrip("/"))


def cluster_log_topic(broker: str, channel: str) -> str:
    """The cluster log's copy of an offset-less channel (MQTT, AMQP, memory), the topic
    its copier writes and workers read: ``sb.log.<broker>.<channel>.<hash>``, readable and
    unique through a hash of ``channel`` (a name, filter or pattern)."""
    digest = hashlib.sha256(f"{broker}\0{channel}".encode()).hexdigest()[:12]
    readable = _UNSAFE.sub("_", f"{broker}.{channel}")[:200]
    return f"sb.log.{readable}.{digest}"


@dataclass(frozen=True, slots=True)
class WindowJob:
    """One topic whose window runs in the workers."""

    api: str
    version: str
    topic: str
    kafka: str  # the kafka broker (name in ``brokers``) holding source and output
    source: str  # the Kafka topic read
    before: tuple[Step, ...]  # the steps up to the window, run by the worker
    window: WindowSpec
    after: tuple[Step, ...]  # the steps after it, run by the gateway on the output
    logged: bool = False  # the source is a cluster log topic (copier records to filter)

    @property
    def output(self) -> str:
        """``sb.win.<api>.<version>.<topic>``"""
        return window_topic(self.api, self.version, self.topic)


def split_at_window(
    steps: Iterable[Step],
) -> tuple[tuple[Step, ...], WindowSpec, tuple[Step, ...]] | None:
    """The steps before the first window, that window, and the steps after it."""
    steps = tuple(steps)
    for index, step in enumerate(steps):
        if isinstance(step, WindowStep):
            return steps[:index], step.window, steps[index + 1 :]
    return None


def window_job(config: Config, api: Api, topic: Topic) -> WindowJob | None:
    """The worker's part of a topic, or None when its window (if any) stays in the gateway."""
    cluster = config.cluster
    if cluster is None or api.broker is None or api.endpoint is not None:
        return None
    if topic.mode == "publish" or "{" in topic.name + topic.channel or topic.debezium:
        return None
    split = split_at_window(topic.pipeline)
    if split is None:
        return None
    broker = config.brokers.get(api.broker)
    if broker is None:
        return None
    logged = broker.type != "kafka"
    if not logged:
        kafka, source = api.broker, topic.channel
    elif cluster.log is not None and broker.type in ("mqtt", "amqp", "memory"):
        kafka, source = cluster.log, cluster_log_topic(api.broker, topic.channel)
    else:
        return None
    before, window, after = split
    return WindowJob(
        api.name, api.version, topic.name, kafka, source, before, window, after, logged
    )


def window_jobs(config: Config, apis: Iterable[Api] | None = None) -> list[WindowJob]:
    """Every topic of ``apis`` (default: the config's) whose window runs in the workers."""
    return [
        job
        for api in (config.apis if apis is None else apis)
        for topic in api.topics
        if (job := window_job(config, api, topic)) is not None
    ]
