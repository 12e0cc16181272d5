"""An aiokafka consumer that is stopped however its start ends.

``async with AIOKafkaConsumer(...)`` leaves a consumer whose start failed (Kafka away, or
the caller cancelled meanwhile) unclosed: aiokafka's ``__aenter__`` is ``start()``, so its
``__aexit__`` never runs, and the consumer warns "Unclosed AIOKafkaConsumer" whenever it is
collected (a full test run failed on that warning in an unrelated test).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer


@asynccontextmanager
async def started_consumer(**settings: Any) -> AsyncIterator[AIOKafkaConsumer]:
    consumer = AIOKafkaConsumer(**settings)
    try:
        await consumer.start()
        yield consumer
    finally:
        await consumer.stop()  # also after a failed start: it lets go of the client
