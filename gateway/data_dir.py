"""``gateway.data_dir``: where brokers without offsets keep their durable replay logs.

Two gateway processes appending to the same replay logs would corrupt them, so a process
locks the directory for as long as it runs. In a cluster with ``cluster.log`` those
channels are served from Kafka instead, and nothing is kept here.
"""

from __future__ import annotations

import fcntl
from contextlib import AsyncExitStack
from pathlib import Path

from bridge.config import Config
from bridge.errors import ConfigError, Problem

DURABLE_LOG_BROKERS = ("mqtt", "amqp", "postgres-cdc")  # keep files in gateway.data_dir


def claim_data_dir(config: Config, stack: AsyncExitStack) -> Path | None:
    """Lock ``gateway.data_dir`` for this process (until ``stack`` closes) when a broker
    keeps logs there; None when none does."""
    logged = config.cluster is not None and config.cluster.log is not None
    durable = [b for b in config.brokers.values() if b.type in DURABLE_LOG_BROKERS]
    if not any(b.type == "postgres-cdc" or not logged for b in durable):
        return None
    path = config.gateway.data_path
    path.mkdir(parents=True, exist_ok=True)
    lock = (path / ".lock").open("w")
    stack.callback(lock.close)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ConfigError(
            [Problem("gateway.data_dir", f"{path} is in use by another gateway process")]
        ) from None
    return path
