"""MQTT through aiomqtt (the only module importing it): one client connection per connector.

MQTT has no offsets, so every subscribed topic filter keeps a bounded in-process replay
buffer (count and age, like connectors/memory.py) with cursors ``<epoch>:<sequence>``; the
epoch is random per connector instance. A filter's buffer starts when it is first subscribed
or, for an exact topic, first published to through this connector: the connector's own
publishes are appended locally once the broker confirmed them (its subscriptions use
MQTT v5 "no local", so the broker does not echo them back). With QoS >= 1 the session is
persistent (fixed client id, clean start on the first connection only, session expiry), so
messages published while the connection is briefly down arrive after the reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
import zlib
from collections.abc import AsyncIterator, Awaitable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlsplit

import aiomqtt
from paho.mqtt.client import topic_matches_sub
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from bridge.config import MqttBroker
from bridge.errors import ConnectorError
from bridge.event import Event, decode_payload, payload_text
from connectors.base import AsyncResource, Gap
from connectors.replay import ReplayLog, log_path, logged_channels

log = logging.getLogger(__name__)

SESSION_EXPIRY = 3600  # seconds the broker keeps a QoS >= 1 session while disconnected
FIRST_CONNECT = 5.0  # seconds __aenter__ waits for the first connection (it never fails)
BACKOFF_MIN, BACKOFF_MAX = 0.2, 10.0
T = TypeVar("T")
_JITTER = secrets.SystemRandom()  # spreads reconnects of many gateways


def subscription_identifier(topic_filter: str) -> int:
    """A stable MQTT v5 subscription identifier (1 .. 268,435,455) for a filter."""
    return zlib.crc32(topic_filter.encode()) % 268_435_455 + 1


def topic_problem(topic: str, *, wildcards: bool) -> str | None:
    """Why ``topic`` is not a topic name (``wildcards`` off: to publish to) or a topic
    filter (on: to subscribe to), or None (MQTT v5 §4.7). The client library checks only
    some of this, and a broker drops the connection over the rest, which would make every
    reconnect fail again."""
    if not topic:
        return "a topic is at least one character long"
    if "\0" in topic:
        return "a topic contains no NUL character"
    if len(topic.encode()) > 65_535:
        return "a topic is at most 65,535 bytes long"
    levels = topic.split("/")
    if not wildcards:
        if "+" in topic or "#" in topic:
            return "a topic to publish to has no wildcards (+, #)"
        return None
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return "# stands alone as the last level of a filter"
        if "+" in level and level != "+":
            return "+ stands alone as a whole level of a filter"
    return None


def message_event(message: aiomqtt.Message) -> Event:
    """A received message as the Event every layer above sees (no cursor)."""
    properties = message.properties
    headers = {str(k): str(v) for k, v in getattr(properties, "UserProperty", None) or []}
    payload = message.payload
    raw = payload if isinstance(payload, bytes | str) else str(payload or "")
    return Event(
        channel=message.topic.value,
        data=decode_payload(raw),
        key=_key(properties),
        headers=headers,
    )


class Client(aiomqtt.Client):
    """aiomqtt's client, waiting for the broker's answers with ``asyncio.timeout``.

    aiomqtt waits with ``asyncio.wait_for``, which on Python 3.11 returns the answer when a
    cancellation arrives in the same loop turn as the answer, and so swallows the
    cancellation (CPython gh-86296, fixed in 3.12 by this same rewrite). A task cancelled
    that way went on subscribing and reading, and the supervisor stopping it waited for ever.
    """

    async def _wait_for(self, fut: Awaitable[T], timeout: float | None) -> T:  # noqa: ASYNC109 (aiomqtt's signature)
        seconds = self.timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(None if seconds == math.inf else seconds):
                return await fut
        except TimeoutError:
            raise aiomqtt.MqttError("Operation timed out") from None


def _properties(packet_type: int) -> Properties:
    return Properties(packet_type)  # type: ignore[no-untyped-call]


class _Filter:
    __slots__ = ("filter", "ident", "log")

    def __init__(self, topic_filter: str, ident: int, log: ReplayLog) -> None:
        self.filter = topic_filter
        # The MQTT v5 subscription identifier: derived from the filter, so it is the same
        # across reconnects and restarts, and a kept session's subscriptions still match.
        self.ident = ident
        self.log = log


class MqttConnector(AsyncResource):
    def __init__(
        self,
        name: str,
        settings: MqttBroker,
        *,
        retain: int,
        max_age: float,
        max_bytes: int | None = None,
        data_dir: Path | None = None,
    ) -> None:
        self.name = name
        self.data_dir = data_dir
        self.settings = settings
        self.retain = retain
        self.max_age = max_age
        self.max_bytes = max_bytes
        self._epoch = secrets.token_hex(3)
        self._filters: dict[str, _Filter] = {}
        # Filters with a durable log from an earlier run, by subscription identifier: not
        # opened at start (CONTRACT §4c); a kept session's message for one opens its log.
        self._dormant: dict[int, str] = {}
        self._subscribed: set[str] = set()  # filters the broker confirmed on this connection
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self.reconnects = 0  # connections made after the first (streambridge_broker_reconnects)
        self._connections = 0
        self._closed = False

    # --- connection ------------------------------------------------------------------------

    def _new_client(self) -> aiomqtt.Client:
        url = urlsplit(self.settings.url)
        persistent = self.settings.qos >= 1
        properties = _properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = SESSION_EXPIRY if persistent else 0
        return Client(
            url.hostname or "127.0.0.1",
            url.port or 1883,
            username=unquote(url.username) if url.username else None,
            password=unquote(url.password) if url.password else None,
            identifier=self.settings.client_id or f"streambridge-{self.name}",
            protocol=aiomqtt.ProtocolVersion.V5,
            # Never clean with QoS >= 1: the session outlives a gateway restart, so what
            # was published to our filters while the gateway was down arrives after it
            # (into the durable replay logs). Identifiers come from the filters, so the old
            # session's subscriptions map onto the same logs.
            clean_start=not persistent,
            properties=properties,
            timeout=10.0,
        )

    async def _run(self) -> None:
        failures = 0
        while not self._closed:
            client = self._new_client()
            try:
                async with client:
                    self._client = client
                    self._subscribed.clear()
                    for state in list(self._filters.values()):
                        await self._broker_subscribe(client, state)
                    self._connected.set()
                    self._connections += 1
                    self.reconnects = self._connections - 1
                    failures = 0
                    log.info("connected", extra={"broker": self.name})
                    async for message in client.messages:
                        self._on_message(message)
            except aiomqtt.MqttError as error:
                log.warning(
                    "connection lost or refused", extra={"broker": self.name, "error": str(error)}
                )
            finally:
                self._connected.clear()
                self._client = None
            failures += 1
            delay = min(BACKOFF_MAX, BACKOFF_MIN * 2 ** min(failures, 10))
            await asyncio.sleep(delay * _JITTER.uniform(0.5, 1.0))

    async def _open(self, stack: AsyncExitStack) -> None:
        self._closed = False
        # The filters this gateway kept logs for before a restart stay on disk until a
        # subscriber or a message of the kept session (queued meanwhile) needs them.
        self._dormant = {
            subscription_identifier(topic_filter): topic_filter
            for topic_filter in logged_channels(self.data_dir, self.name)
        }
        stack.callback(self._close_logs)
        supervisor = await self._supervisor(stack, f"mqtt {self.name}")
        stack.callback(self._close)  # first of all on the way out
        supervisor.spawn(f"mqtt-{self.name}", self._run)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FIRST_CONNECT):
                await self._connected.wait()

    def _close(self) -> None:
        self._closed = True

    def _close_logs(self) -> None:
        for state in self._filters.values():
            state.log.close()

    async def ready(self) -> bool:
        return self._connected.is_set() and self._client is not None

    async def _connection(self) -> aiomqtt.Client:
        while True:
            await self._connected.wait()
            if self._client is not None:
                return self._client

    # --- buffers ---------------------------------------------------------------------------

    def _filter(self, topic_filter: str) -> _Filter:
        state = self._filters.get(topic_filter)
        if state is None:
            self._check(topic_filter, wildcards=True)
            self._dormant.pop(subscription_identifier(topic_filter), None)
            state = self._filters[topic_filter] = _Filter(
                topic_filter,
                subscription_identifier(topic_filter),
                ReplayLog(
                    self._epoch,
                    retain=self.retain,
                    max_age=self.max_age,
                    max_bytes=self.max_bytes,
                    path=log_path(self.data_dir, self.name, topic_filter),
                    name=topic_filter,
                ),
            )
        return state

    def _on_message(self, message: aiomqtt.Message) -> None:
        topic = message.topic.value
        event = message_event(message)
        idents = set(getattr(message.properties, "SubscriptionIdentifier", None) or [])
        for ident in idents & self._dormant.keys():
            topic_filter = self._dormant.pop(ident)
            if topic_matches_sub(topic_filter, topic):
                self._filter(topic_filter)
        now = time.time()
        for state in list(self._filters.values()):
            # Identifiers tell which subscriptions this copy is for, so overlapping filters
            # get each message once whether the broker sends one copy or one per filter.
            if idents and state.ident not in idents:
                continue
            if topic_matches_sub(state.filter, topic):
                state.log.append(event, now)

    async def _broker_subscribe(self, client: aiomqtt.Client, state: _Filter) -> None:
        properties = _properties(PacketTypes.SUBSCRIBE)
        properties.SubscriptionIdentifier = state.ident
        # retainHandling 1: retained messages only for a new subscription, not on reconnect.
        options = SubscribeOptions(qos=self.settings.qos, noLocal=True, retainHandling=1)
        await client.subscribe(state.filter, options=options, properties=properties)
        self._subscribed.add(state.filter)

    async def _ensure_subscribed(self, state: _Filter) -> None:
        while state.filter not in self._subscribed and not self._closed:
            client = await self._connection()
            try:
                await self._broker_subscribe(client, state)
            except aiomqtt.MqttError:  # the reconnect resubscribes every filter
                await asyncio.sleep(0.1)

    def _check(self, topic: str, *, wildcards: bool) -> None:
        problem = topic_problem(topic, wildcards=wildcards)
        if problem is not None:
            raise ConnectorError(f"broker {self.name}: {topic!r}: {problem}", retriable=False)

    async def release(self, channel: str) -> None:
        """Forget ``channel`` once its hub has closed: the broker subscription ends and the
        log leaves memory (its file stays, and is read again by the next subscriber)."""
        state = self._filters.pop(channel, None)
        if state is None:
            return
        state.log.close()
        self._subscribed.discard(channel)
        client = self._client
        if client is not None:
            with contextlib.suppress(aiomqtt.MqttError):  # a reconnect forgets it anyway
                await client.unsubscribe(channel, timeout=5.0)

    # --- the Connector protocol ------------------------------------------------------------

    async def publish(self, channel: str, event: Event) -> None:
        self._check(channel, wildcards=False)
        text = payload_text(event.data)
        properties = _properties(PacketTypes.PUBLISH)
        if event.headers:
            properties.UserProperty = [(str(k), str(v)) for k, v in event.headers.items()]
        if event.key is not None:  # MQTT has no key: v5 correlation data carries it
            properties.CorrelationData = event.key.encode()
        while True:
            client = await self._connection()
            try:
                # For QoS > 0 this returns once the PUBACK / PUBCOMP arrived.
                await client.publish(channel, text, qos=self.settings.qos, properties=properties)
                break
            except aiomqtt.MqttError:  # resend after the reconnect (at least once)
                await asyncio.sleep(0.05)
        stored = Event(
            channel=channel, data=decode_payload(text), key=event.key, headers=dict(event.headers)
        )
        self._filter(channel)  # the exact topic retains the connector's own writes
        now = time.time()
        for state in list(self._filters.values()):
            if topic_matches_sub(state.filter, channel):
                state.log.append(stored, now)

    async def position(self, channel: str) -> str | None:
        return self._filter(channel).log.position

    def read_range(
        self,
        channel: str,
        from_cursor: str,
        until_cursor: str | None,
        *,
        max_events: int | None = None,
        max_age: float | None = None,
    ) -> AsyncIterator[Event | Gap]:
        return self._filter(channel).log.read_range(
            from_cursor, until_cursor, max_events=max_events, max_age=max_age
        )

    async def subscribe(
        self, channel: str, from_cursor: str | None = None
    ) -> AsyncIterator[Event | Gap]:
        state = self._filter(channel)
        await self._ensure_subscribed(state)
        state.log.trim(time.time())
        async for item in state.log.follow(from_cursor, closed=lambda: self._closed):
            yield item


def _key(properties: object) -> str | None:
    """The event's key: the v5 correlation data a publish of ours (or anyone's) set."""
    data = getattr(properties, "CorrelationData", None)
    if isinstance(data, bytes):
        return data.decode("utf-8", errors="replace")
    return data if isinstance(data, str) else None
