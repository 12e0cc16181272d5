"""A consumer whose start fails is stopped: aiokafka's own ``async with`` leaves it
unclosed, and its "Unclosed AIOKafkaConsumer" warning then fails whatever test the
collector happens to run in (warnings are errors in this suite)."""

from __future__ import annotations

import gc
import socket

import pytest
from aiokafka.errors import KafkaConnectionError

from connectors.kafka_consumer import started_consumer


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_consumer_whose_start_fails_is_closed() -> None:
    with pytest.raises(KafkaConnectionError):
        async with started_consumer(bootstrap_servers=f"127.0.0.1:{_closed_port()}"):
            pytest.fail("started without a broker")
    gc.collect()  # an unclosed consumer warns here, and the test fails on it
