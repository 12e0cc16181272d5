"""The data directory of a gateway (``gateway.data_dir``): the durable replay logs of its
MQTT, AMQP and CDC channels, held by one gateway process at a time."""

from __future__ import annotations

import fcntl
from contextlib import AsyncExitStack
from pathlib import Path

from bridge.config import Config
from bridge.errors import ConfigError, Problem

DURABLE_LOG_BROKERS = ("mqtt", "amqp", "postgres-cdc")  # keep files in gateway.data_dir


def claim_data_dir(config: Config, stack: AsyncExitStack) -> Path | None:
    """Lock ``gateway.data_dir`` for this process, until ``stack`` closes, when a broker
    keeps logs there: two gateways appending to the same replay logs would corrupt them."""
    if not any(b.type in DURABLE_LOG_BROKERS for b in config.brokers.values()):
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
