"""The copier's side of each source broker: receive a channel's messages as the one
copier, hand each to the session's :class:`Appender`, acknowledge it once Kafka has it.

- MQTT: a persistent session (clean start off, a day's session expiry) under a client id
  fixed per channel, so whichever node copies resumes the same session and receives what
  was published meanwhile, and the broker's takeover disconnects a stale copier (its
  unacknowledged messages go to the new one). QoS 1 with manual acknowledgements; at
  most ``RECEIVE_MAXIMUM`` are unacknowledged at a time.
- AMQP: a durable queue per channel with ``x-single-active-consumer``: every node using
  the channel consumes it, RabbitMQ delivers to one; when its connection goes, the
  unacknowledged messages are redelivered to the next.

A session ends by raising ConnectorError (connection lost, taken over); the cluster log's
supervisor starts the next one.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from typing import Protocol
from urllib.parse import unquote, urlsplit

import aio_pika
import aiomqtt
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage
from aio_pika.exceptions import AMQPException, ChannelInvalidStateError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from bridge.config import AmqpBroker, MqttBroker
from bridge.errors import ConnectorError
from connectors.amqp import message_event as amqp_event
from connectors.cluster.appender import Appender
from connectors.cluster.fence import log_topic
from connectors.mqtt import Client as MqttClient
from connectors.mqtt import message_event as mqtt_event

RECEIVE_MAXIMUM = 16  # MQTT messages a copier may hold unacknowledged
# How far back a new MQTT copier looks for the first message it is sent again. Packet ids
# make a false match unlikely, so it looks well past RECEIVE_MAXIMUM: messages a stale
# copier had queued may still land before the new copier's marker.
MQTT_LOOKBACK = 256
AMQP_PREFETCH_MAX = 64
SESSION_EXPIRY = 86_400  # seconds the broker keeps collecting for a channel nobody copies

Begin = Callable[[], Awaitable[Appender]]


class Source(Protocol):
    window: int  # how many records before its marker a new copier compares

    async def copy(self, channel: str, begin: Begin) -> None:
        """Copy ``channel`` until the session ends (by raising ConnectorError); ``begin``
        opens the session's appender once this copier alone receives the channel."""
        ...


def copier_client_id(broker: str, channel: str) -> str:
    """The MQTT client id of ``channel``'s copier, the same on every node (23 characters
    at most, as MQTT 3.1.1 brokers guarantee)."""
    return "sbc-" + hashlib.sha256(f"{broker}\0{channel}".encode()).hexdigest()[:19]


def _properties(packet_type: int) -> Properties:
    return Properties(packet_type)  # type: ignore[no-untyped-call]


class MqttSource:
    window = MQTT_LOOKBACK

    def __init__(self, broker: str, settings: MqttBroker) -> None:
        self.broker = broker
        self.settings = settings

    def _client(self, channel: str) -> aiomqtt.Client:
        url = urlsplit(self.settings.url)
        properties = _properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = SESSION_EXPIRY
        properties.ReceiveMaximum = RECEIVE_MAXIMUM
        client = MqttClient(
            url.hostname or "127.0.0.1",
            url.port or 1883,
            username=unquote(url.username) if url.username else None,
            password=unquote(url.password) if url.password else None,
            identifier=copier_client_id(self.broker, channel),
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=properties,
            timeout=10.0,
        )
        # Acknowledge only once Kafka has the record; aiomqtt exposes no switch for it.
        client._client.manual_ack_set(True)
        return client

    async def copy(self, channel: str, begin: Begin) -> None:
        client = self._client(channel)
        try:
            async with client:
                # retainHandling 1: the retained message only when the session is new.
                options = SubscribeOptions(qos=1, retainHandling=1)
                await client.subscribe(channel, options=options)
                # Taken over and subscribed: from here on the session is this copier's.
                appender = await begin()
                async for message in client.messages:
                    # The packet id is what the broker redelivers an unacknowledged
                    # message with: it tells a resent message from a new, equal one.
                    await appender.append(mqtt_event(message), source_id=str(message.mid))
                    client._client.ack(message.mid, message.qos)
        except aiomqtt.MqttError as exc:
            raise ConnectorError(
                f"broker {self.broker}: copier of {channel}: {exc}", retriable=True
            ) from exc
        raise ConnectorError(f"broker {self.broker}: copier of {channel}: disconnected")


class AmqpSource:
    def __init__(self, broker: str, settings: AmqpBroker) -> None:
        self.broker = broker
        self.settings = settings
        self.window = min(settings.prefetch, AMQP_PREFETCH_MAX)

    async def copy(self, channel: str, begin: Begin) -> None:
        try:
            async with await aio_pika.connect(self.settings.url) as connection:
                await self._copy(connection, channel, begin)
        except (AMQPException, ChannelInvalidStateError, OSError) as exc:
            raise ConnectorError(
                f"broker {self.broker}: copier of {channel}: {exc}", retriable=True
            ) from exc
        raise ConnectorError(f"broker {self.broker}: copier of {channel}: disconnected")

    async def _copy(self, connection: AbstractConnection, channel: str, begin: Begin) -> None:
        consuming = await connection.channel()
        await consuming.set_qos(prefetch_count=self.window)
        # Subscribing never creates an exchange (CONTRACT §4c).
        exchange = await consuming.get_exchange(self.settings.exchange, ensure=True)
        queue = await consuming.declare_queue(
            log_topic(self.broker, channel),
            durable=True,
            arguments={"x-single-active-consumer": True},
        )
        await queue.bind(exchange, routing_key=channel)
        # A consumer callback into a queue of our own (at most ``window`` deliveries are
        # unacknowledged), not aio-pika's queue iterator: a cancelled iterator sends
        # basic.cancel and waits for its answer without a deadline, which hung a stopping
        # node for minutes (aio-pika#546); and RabbitMQ would make the next consumer active
        # while the unacknowledged messages are still held here, to come back to it out of
        # order. Closing the connection (aiormq bounds its handshake) gives them back and
        # ends the consumer together.
        inbox: asyncio.Queue[AbstractIncomingMessage | None] = asyncio.Queue()
        queue.close_callbacks.add(lambda _queue, _exc: inbox.put_nowait(None))  # gone
        await queue.consume(inbox.put)
        appender: Appender | None = None
        while (message := await inbox.get()) is not None:
            # The first delivery: RabbitMQ made this consumer the active one.
            appender = appender or await begin()
            await appender.append(amqp_event(message), redelivered=bool(message.redelivered))
            await message.ack()
