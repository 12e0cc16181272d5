"""The ``streambridge worker --config F`` command: prepares topics, runs the Faust worker."""

from __future__ import annotations

import asyncio
import sys

import faust

from bridge.config import Config
from bridge.errors import ConnectorError
from bridge.window_topics import window_jobs
from worker.app import WorkerOptions, prepare, window_app

EXIT_INVALID = 2


def run(config: Config, options: WorkerOptions, *, loglevel: str = "info") -> int:
    """Run until stopped (SIGINT/SIGTERM); 2 when the config gives the worker nothing to do."""
    jobs = window_jobs(config)
    if config.cluster is None:
        print("cluster: a worker needs a cluster config (CONTRACT §11)", file=sys.stderr)
        return EXIT_INVALID
    if not jobs:
        print("apis: no topic has a window step that runs in workers", file=sys.stderr)
        return EXIT_INVALID
    kafkas = sorted({job.kafka for job in jobs})
    if len(kafkas) > 1:
        print(
            f"brokers: windows read {', '.join(kafkas)}; one worker serves one Kafka cluster",
            file=sys.stderr,
        )
        return EXIT_INVALID
    broker = config.brokers[kafkas[0]]
    assert broker.type == "kafka"  # window_job picks kafka brokers only
    try:
        topics = asyncio.run(prepare(broker.bootstrap, jobs, options))
    except ConnectorError as exc:  # Kafka unreachable, or a topic with another partition count
        print(f"brokers.{kafkas[0]}: {exc}", file=sys.stderr)
        return 1
    app = window_app(broker.bootstrap, list(zip(jobs, topics, strict=True)), options)
    worker = faust.Worker(app, loglevel=loglevel, redirect_stdouts=False)
    worker.execute_from_commandline()  # exits the process when the worker stops
    return 0
