"""Broker failures reach the gateway as one error (STYLE §8): ``ConnectorError``, raised
from the client library's own error, whose ``retriable`` says whether trying again later
may help (an unreachable broker) or not (a topic the broker can never take)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Iterator

import pytest

from bridge.config import AmqpBroker, KafkaBroker, MqttBroker
from bridge.errors import ConnectorError
from bridge.event import Event
from connectors.amqp import AmqpConnector
from connectors.base import EARLIEST, Connector
from connectors.kafka import KafkaConnector
from connectors.mqtt import MqttConnector, topic_problem
from tests.contract.test_connector_contract import subscription, take_events


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port bound but not listening: every connection to it is refused, and
    nothing else can take it while the test runs."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def kafka_at(port: int) -> Connector:
    settings = KafkaBroker(type="kafka", bootstrap=f"127.0.0.1:{port}")
    return KafkaConnector("kafka", settings, retain=5, max_age=600.0)


def amqp_at(port: int) -> Connector:
    settings = AmqpBroker(type="amqp", url=f"amqp://guest:guest@127.0.0.1:{port}/")
    return AmqpConnector("amqp", settings, retain=5, max_age=600.0)


@pytest.mark.parametrize("connector_at", [kafka_at, amqp_at], ids=["kafka", "amqp"])
async def test_an_unreachable_broker_is_a_retriable_connector_error(
    closed_port: int, connector_at: Callable[[int], Connector]
) -> None:
    with pytest.raises(ConnectorError) as raised:
        async with connector_at(closed_port):
            pytest.fail("the connector opened without a broker")
    assert raised.value.retriable is True
    assert "cannot connect" in str(raised.value)
    assert raised.value.__cause__ is not None  # the client's own error, for the log


async def test_a_connector_used_outside_its_context_is_a_final_connector_error(
    closed_port: int,
) -> None:
    with pytest.raises(ConnectorError) as raised:
        await kafka_at(closed_port).publish("t", Event("t", "x"))
    assert raised.value.retriable is False


@pytest.mark.parametrize(
    ("topic", "wildcards", "problem"),
    [
        ("a/b", False, None),
        ("a/+/b", True, None),
        ("a/#", True, None),
        ("#", True, None),
        ("a/+", False, "wildcards"),
        ("", False, "at least one character"),
        ("a\0b", True, "NUL"),
        ("a/#/b", True, "last level"),
        ("a/b#", True, "last level"),
        ("a/b+/c", True, "whole level"),
    ],
)
def test_mqtt_topic_names_and_filters(topic: str, wildcards: bool, problem: str | None) -> None:
    found = topic_problem(topic, wildcards=wildcards)
    assert (found is None) if problem is None else (problem in (found or "")), found


@pytest.mark.broker
async def test_a_topic_mqtt_cannot_take_is_a_final_connector_error() -> None:
    """Mosquitto drops the whole connection over a bad topic; the connector refuses it
    first, so it neither reaches the broker nor breaks the session for other topics."""
    settings = MqttBroker(
        type="mqtt", url="mqtt://127.0.0.1:1883", qos=1, client_id=f"contract-{uuid.uuid4().hex}"
    )
    channel = f"contract/{uuid.uuid4().hex}"
    async with MqttConnector("mqtt", settings, retain=5, max_age=600.0) as connector:
        for topic in (f"{channel}/+", ""):
            with pytest.raises(ConnectorError) as raised:
                await connector.publish(topic, Event(topic, "x"))
            assert raised.value.retriable is False
        with pytest.raises(ConnectorError) as raised:
            await anext(connector.subscribe(f"{channel}/#/b"))
        assert raised.value.retriable is False

        await connector.publish(channel, Event(channel, "still fine"))
        async with subscription(connector, channel, EARLIEST) as stream:
            (event,) = await take_events(stream, 1)
        assert event.data == "still fine"
        assert await connector.ready()
