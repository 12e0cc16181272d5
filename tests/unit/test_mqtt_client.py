"""The MQTT client never loses a cancellation: a task stopped just as the broker answers
stops (Python 3.11's ``asyncio.wait_for`` returned the answer instead, and a supervisor
waiting for the task waited for ever)."""

from __future__ import annotations

import asyncio

import aiomqtt
import pytest

from connectors.mqtt import Client


async def test_a_cancellation_that_arrives_with_the_answer_is_kept() -> None:
    client = Client("127.0.0.1")
    answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    waiting = asyncio.create_task(client._wait_for(answer, 5.0))
    await asyncio.sleep(0)  # waiting for the answer
    answer.set_result(1)
    waiting.cancel()  # in the same loop turn
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_no_answer_in_time_is_an_mqtt_error() -> None:
    client = Client("127.0.0.1")
    answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    with pytest.raises(aiomqtt.MqttError, match="timed out"):
        await client._wait_for(answer, 0.01)
