"""The Faust app of ``streambridge worker`` (CONTRACT §1, §11): windows in the cluster.

Per :class:`bridge.window_topics.WindowJob`, two agents and one table:

``<table>-split`` reads the source topic, decodes each record as the Kafka connector
would (an :class:`bridge.event.Event` with the record's time), runs the steps before the
window (``pipelines``), and forwards each output's group and aggregate arguments to the
``<app>-<table>-groups`` topic, keyed by the group. The record's source partition and
offset travel with it. Faust flushes its producer before it commits a source offset, so
the forwards of what it commits are written (at least once). Records Faust skips after a
rebalance are read by :class:`worker.continuity.Continuity` instead.

``<table>-count`` reads the groups topic and adds each contribution to the windows it
falls in by its *event time*, in the :class:`worker.table.ClosingTable` (its changelog
is ``<app>-<table>-changelog``). A window's value keeps, per source partition, the last
(offset, index) it counted, so an event forwarded twice (a worker killed before its
commit) is counted once. The table closes windows per partition and writes them to
``sb.win.<api>.<version>.<topic>``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any, cast

import faust
from faust.types import TP

from bridge.errors import PipelineError
from bridge.event import Event, decode_payload
from bridge.window_topics import WindowJob, kafka_name
from connectors.cluster.fence import CHANNEL, Fence, source_headers
from connectors.cluster.log import fence_before
from connectors.kafka_topics import KafkaTopics, Record, Tail
from pipelines.aggregation import Aggregation, Totals
from pipelines.pipeline import build_pipeline
from pipelines.values import value_key
from pipelines.window import panes, windows_holding
from worker.continuity import Continuity
from worker.table import GROUP_HEADER, WINDOW_END_HEADER, ClosingTable, Key

log = logging.getLogger("streambridge.worker")


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    app_id: str = "streambridge-windows"
    expires: float = 30.0  # longer than a rebalance stall (session timeout + recovery)
    partitions: int = 2  # of a source topic the worker creates
    session_timeout: float = 10.0
    commit_interval: float = 0.5
    cleanup_interval: float = 1.0
    step_budget: float | None = None


def table_name(job: WindowJob) -> str:
    """The table of a job; a changed window or earlier steps make another table."""
    shape = json.dumps(
        [[s.model_dump(mode="json") for s in job.before], job.window.model_dump(mode="json")],
        sort_keys=True,
    )
    digest = hashlib.sha256(f"{job.source}\n{shape}".encode()).hexdigest()[:8]
    return kafka_name(job.api, job.version, job.topic.lstrip("/"), digest)


@dataclass(frozen=True, slots=True)
class JobTopics:
    """The Kafka topics of one job, all with ``partitions`` partitions."""

    source: str
    groups: str
    changelog: str
    output: str
    partitions: int


def job_topics(job: WindowJob, app_id: str, partitions: int) -> JobTopics:
    name = table_name(job)
    return JobTopics(
        job.source,
        f"{app_id}-{name}-groups",
        f"{app_id}-{name}-changelog",
        job.output,
        partitions,
    )


async def prepare(
    bootstrap: str, jobs: Iterable[WindowJob], options: WorkerOptions
) -> list[JobTopics]:
    """Create each job's missing topics, all with its source's partition count."""
    prepared: list[JobTopics] = []
    async with KafkaTopics(bootstrap) as admin:
        for job in jobs:
            # A cluster log topic has one partition (total order per channel), as its
            # copier creates it.
            missing = 1 if job.logged else options.partitions
            count = await admin.partitions(job.source) or missing
            await admin.ensure(job.source, count)
            topics = job_topics(job, options.app_id, count)
            await admin.ensure(topics.groups, count)
            await admin.ensure(topics.changelog, count, compact=True)
            await admin.ensure(topics.output, count)
            prepared.append(topics)
    return prepared


def window_app(
    bootstrap: str, jobs: list[tuple[WindowJob, JobTopics]], options: WorkerOptions
) -> faust.App:
    app = faust.App(
        options.app_id,
        broker=f"kafka://{bootstrap}",
        autodiscover=False,
        web_enabled=False,  # it would bind 0.0.0.0:6066
        store="memory://",
        processing_guarantee="at_least_once",
        topic_replication_factor=1,
        table_standby_replicas=0,
        table_cleanup_interval=options.cleanup_interval,
        broker_session_timeout=options.session_timeout,
        broker_heartbeat_interval=max(options.session_timeout / 10, 0.1),
        broker_commit_interval=options.commit_interval,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        stream_wait_empty=True,  # a revocation waits for the record in hand, then commits
    )
    for job, topics in jobs:
        _add_job(app, bootstrap, job, topics, options)
    return app


def _add_job(
    app: faust.App, bootstrap: str, job: WindowJob, topics: JobTopics, options: WorkerOptions
) -> None:
    name = table_name(job)
    labels = {"api": job.api, "version": job.version, "topic": job.topic}

    def on_error(step: int, error: PipelineError, event: Event) -> None:
        log.warning(
            "a pipeline step skipped an event", extra={**labels, "step": step, "error": str(error)}
        )

    before = build_pipeline(job.before, on_error, budget=options.step_budget)
    aggregation = Aggregation.from_spec(job.window, budget=options.step_budget)
    pane_seconds, panes_per_window = panes(job.window)
    source = app.topic(topics.source, key_serializer="raw", value_serializer="raw")
    groups = app.topic(
        topics.groups,
        key_serializer="raw",
        value_serializer="json",
        partitions=topics.partitions,
        internal=True,
    )

    async def read_tails(partitions: Iterable[int]) -> dict[int, Tail]:
        async with KafkaTopics(bootstrap) as admin:
            return await admin.last_records(topics.output, partitions)

    async def emit(partition: int, closing: list[tuple[Key, Any]]) -> None:
        sent = []
        for (group, (start, end)), state in closing:
            totals = Totals(state[0], state[1], state[2], state[3])
            data = aggregation.data(totals, start, end)
            sent.append(
                await app.producer.send(
                    topics.output,
                    key=group.encode() if aggregation.grouped else None,
                    value=json.dumps(data, separators=(",", ":")).encode(),
                    partition=partition,
                    timestamp=end,
                    headers=[
                        (WINDOW_END_HEADER, repr(end).encode()),
                        (GROUP_HEADER, group.encode()),
                    ],
                )
            )
        await asyncio.gather(*sent)
        log.info("windows closed", extra={**labels, "partition": partition, "groups": len(closing)})

    table = ClosingTable(
        app,
        name=name,
        partitions=topics.partitions,
        expires=options.expires,
        window_size=pane_seconds * panes_per_window,
        groups_topic=topics.groups,
        changelog_topic=app.topic(
            topics.changelog, partitions=topics.partitions, internal=True, key_serializer="json"
        ),
        emit=emit,
        read_tails=read_tails,
    )
    app.tables.add(table)

    async def settle(tp: TP, start: int, end: int) -> None:
        # Faust's own way to let its committed offset pass offsets it will not hand out
        # (it uses it for the holes of compacted topics): private, pinned with Faust.
        await cast(Any, app.consumer)._add_gap(tp, start, end - 1)

    def committed(tp: TP) -> int | None:
        # What Faust's consumer read as the group's committed offset when it last sought
        # to it (after each rebalance's recovery): private too.
        offset = cast(Any, app.consumer)._committed_offset.get(tp)
        return offset if isinstance(offset, int) else None

    async def read_range(tp: TP, start: int, end: int) -> list[Record]:
        async with KafkaTopics(bootstrap) as kafka:
            return await kafka.records(tp.topic, tp.partition, start, end)

    continuity = Continuity(read_range, settle, committed)
    # Per source partition of a cluster log source, as gateways read it: after a
    # rebalance, the fence the log's records give at the offset reading starts from.
    fences: dict[int, Fence] = {}

    async def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        continuity.reset()
        fences.clear()
        await table.stop_closing()

    app.on_partitions_revoked.connect(on_revoked)

    async def forward(message: Record) -> None:
        headers = {k: v.decode(errors="replace") for k, v in message.headers or ()}
        channel = job.source
        if job.logged:
            if message.partition not in fences:
                fences[message.partition] = await fence_before(
                    bootstrap, job.source, message.offset
                )
            if not fences[message.partition].admit(headers):
                return
            channel = headers.get(CHANNEL, channel)
            headers = source_headers(headers)
        event = Event(
            channel=channel,
            data=decode_payload(message.value or b""),
            key=message.key.decode(errors="replace") if message.key is not None else None,
            headers=headers,
            time=message.timestamp,
        )
        for index, out in enumerate(before.feed(event, event.time)):
            try:
                group, arguments = aggregation.contribution(out)
            except PipelineError as error:
                on_error(len(job.before), error, out)
                continue
            await groups.send(
                key=value_key(group).encode(),
                value={
                    "g": group,
                    "c": out.channel,
                    "a": arguments,
                    "t": out.time,
                    "m": [message.partition, message.offset, index],
                },
                timestamp=out.time,
            )

    async def split(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for record in stream.events():
            message = record.message
            for missed in await continuity.missed_before(message.tp, message.offset):
                await forward(missed)
            await forward(as_record(message))
            yield None

    def add(partition: int, group: str, value: dict[str, Any]) -> None:
        source, *position = value["m"]
        table.observe(partition, value["t"], time.time())
        for start, end in windows_holding(value["t"], pane_seconds, panes_per_window):
            if table.is_closed(partition, end):
                table.late += 1
                log.warning(
                    "an event came after its window closed", extra={**labels, "window_end": end}
                )
                continue
            key: Key = (group, (start, end))
            state = table.get(key)
            marks: dict[str, list[int]] = dict(state[4]) if state else {}
            if marks.get(str(source), [-1]) >= position:
                continue  # forwarded again after a failover: counted already
            totals = Totals(*state[:4]) if state else Totals(value["g"], value["c"])
            totals.add(aggregation.functions, value["a"])
            marks[str(source)] = position
            table[key] = [totals.value, totals.channel, totals.count, totals.partials, marks]

    async def count(stream: faust.StreamT[Any]) -> AsyncIterator[None]:
        async for record in stream.events():
            message = record.message
            for missed in await continuity.missed_before(message.tp, message.offset):
                add(
                    missed.partition,
                    (missed.key or b"").decode(),
                    json.loads(missed.value or b"{}"),
                )
            add(message.partition, record.key.decode(), record.value)
            yield None

    app.agent(source, name=f"{name}-split")(split)
    app.agent(groups, name=f"{name}-count")(count)


def as_record(message: Any) -> Record:
    """What the split agent uses of a Faust message (whose headers Faust types loosely)."""
    headers = list(message.headers or ())
    return Record(
        message.partition, message.offset, message.key, message.value, headers, message.timestamp
    )
