"""The AMQP 0-9-1 connector (RabbitMQ), on aio-pika (STYLE §3).

A channel is a routing key on publish and a binding pattern (``*``, ``#``) on subscribe.
AMQP has no offsets, so each pattern keeps a bounded in-process replay buffer (count and
age, like the memory connector) fed by one exclusive auto-delete queue bound to the
exchange; it starts when the pattern is first watched (subscribed) and lives as long as
the connector. Cursors are ``<epoch>:<sequence>`` per pattern, the epoch random per
connector instance, so a cursor from another process is reported as a Gap.

A message is acknowledged once every subscriber of its pattern has taken the event and
come back for the next one, so the prefetch window is real back-pressure from the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustConnection,
)
from aio_pika.exceptions import (
    AMQPException,
    AuthenticationError,
    ChannelInvalidStateError,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
    IncompatibleProtocolError,
)

from bridge.config import AmqpBroker
from bridge.errors import ConnectorError
from bridge.event import Event, decode_payload, payload_text
from connectors.base import AsyncResource, Gap
from connectors.replay import ReplayLog, log_path

log = logging.getLogger(__name__)

# The event key rides in the message id, which aiormq fills with a random one when it is
# empty; this message type says that the id is such a random one, not a key.
KEYLESS = "streambridge.keyless"


class _Reader:
    """One subscriber: ``position`` is the sequence of the last event it has finished with."""

    __slots__ = ("position",)

    def __init__(self, position: int) -> None:
        self.position = position


class _Pattern:
    __slots__ = ("baseline", "channel", "log", "matcher", "readers", "received", "unacked")

    def __init__(self, pattern: str, log: ReplayLog, published: Counter[str]) -> None:
        self.log = log
        self.channel: AbstractChannel | None = None  # consuming; closing it drops the queue
        self.matcher = binding_matcher(pattern)
        self.readers: set[_Reader] = set()
        self.unacked: deque[tuple[int, AbstractIncomingMessage]] = deque()
        # Our own confirmed publishes before the queue was bound never reach it; those
        # after it must have arrived before "the live end" means anything (see _caught_up).
        self.baseline = Counter({k: n for k, n in published.items() if self.matcher(k)})
        self.received: Counter[str] = Counter()

    def finished(self) -> list[AbstractIncomingMessage]:
        """The messages every current subscriber is done with (all of them when none)."""
        floor = min((reader.position for reader in self.readers), default=self.log.last)
        done = []
        while self.unacked and self.unacked[0][0] <= floor:
            done.append(self.unacked.popleft()[1])
        return done


CATCH_UP_SECONDS = 2.0

# Refusals that a reconnect does not change: credentials, a missing or mismatched exchange.
_FINAL = (
    AuthenticationError,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
    IncompatibleProtocolError,
)


def binding_matcher(pattern: str) -> Callable[[str], bool]:
    """AMQP topic-exchange matching: ``*`` is one word, ``#`` zero or more words."""
    words = tuple(pattern.split("."))

    def match(pw: tuple[str, ...], kw: tuple[str, ...]) -> bool:
        if not pw:
            return not kw
        if pw[0] == "#":
            return any(match(pw[1:], kw[i:]) for i in range(len(kw) + 1))
        return bool(kw) and pw[0] in ("*", kw[0]) and match(pw[1:], kw[1:])

    return lambda key: match(words, tuple(key.split(".")))


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def message_event(message: AbstractIncomingMessage) -> Event:
    """A delivered message as the Event every layer above sees (no cursor)."""
    text = (message.content_type or "").startswith("text/")
    return Event(
        channel=message.routing_key or "",
        data=message.body.decode("utf-8", errors="replace")
        if text
        else decode_payload(message.body),
        key=None if message.type == KEYLESS else message.message_id or None,
        headers={key: _text(value) for key, value in (message.headers or {}).items()},
        time=message.timestamp.timestamp() if message.timestamp else time.time(),
    )


class AmqpConnector(AsyncResource):
    def __init__(
        self,
        name: str,
        settings: AmqpBroker,
        *,
        retain: int = 1000,
        max_age: float = 600.0,
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
        self._connection: AbstractRobustConnection | None = None
        self._exchange: AbstractExchange | None = None  # on the publisher-confirms channel
        self._patterns: dict[str, _Pattern] = {}
        self._published: Counter[str] = Counter()  # confirmed publishes per routing key
        self._declaring = asyncio.Lock()
        self.reconnects = 0  # robust-connection reconnects (streambridge_broker_reconnects)

    def _count_reconnect(self, *_: object) -> None:
        self.reconnects += 1

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """aio-pika's errors as ConnectorError: the one place they are mapped. A channel
        that is closed for the moment (the robust connection is reconnecting) raises a
        RuntimeError there, not an AMQP error."""
        try:
            yield
        except (AMQPException, ChannelInvalidStateError, OSError) as exc:
            raise ConnectorError(
                f"broker {self.name}: {action}: {exc}", retriable=not isinstance(exc, _FINAL)
            ) from exc

    async def _open(self, stack: AsyncExitStack) -> None:
        with self._errors("cannot connect"):
            connection = await aio_pika.connect_robust(self.settings.url)
            await stack.enter_async_context(connection)
            connection.reconnect_callbacks.add(self._count_reconnect)
            publishing = await connection.channel(publisher_confirms=True)
            self._exchange = await self._declare_exchange(publishing, passive=False)
        self._connection = connection
        stack.callback(self._close_logs)  # before the connection closes

    def _close_logs(self) -> None:
        for pattern in self._patterns.values():
            pattern.log.close()

    async def ready(self) -> bool:
        connection = self._connection
        return connection is not None and connection.connected.is_set()

    async def _declare_exchange(
        self, channel: AbstractChannel, *, passive: bool
    ) -> AbstractExchange:
        """``passive``: only look the exchange up (subscribing never creates one,
        CONTRACT §4c); publishing may declare it."""
        name = self.settings.exchange
        if passive or name.startswith("amq."):  # built in: may only be declared passively
            return await channel.get_exchange(name, ensure=True)
        return await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)

    def _connected(self) -> AbstractRobustConnection:
        if self._connection is None:
            raise ConnectorError(f"broker {self.name}: used outside its context")
        return self._connection

    # --- publishing ----------------------------------------------------------------------------

    async def publish(self, channel: str, event: Event) -> None:
        if self._exchange is None:
            raise ConnectorError(f"broker {self.name}: used outside its context")
        message = aio_pika.Message(
            payload_text(event.data).encode("utf-8"),
            content_type="text/plain" if isinstance(event.data, str) else "application/json",
            content_encoding="utf-8",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=event.key,
            type=KEYLESS if event.key is None else None,
            headers=dict(event.headers),
            timestamp=datetime.fromtimestamp(event.time or time.time(), UTC),
        )
        with self._errors(f"publish to {channel}"):  # once the broker confirmed; a nack raises
            await self._exchange.publish(message, routing_key=channel, mandatory=False)
        self._published[channel] += 1

    # --- subscribing ---------------------------------------------------------------------------

    async def watch(self, channel: str) -> None:
        """Start retaining ``channel`` (a binding pattern) without subscribing to it."""
        await self._pattern(channel)

    async def _pattern(self, pattern: str) -> _Pattern:
        async with self._declaring:
            state = self._patterns.get(pattern)
            if state is not None:
                return state
            log_ = ReplayLog(
                self._epoch,
                retain=self.retain,
                max_age=self.max_age,
                max_bytes=self.max_bytes,
                path=log_path(self.data_dir, self.name, pattern),
                name=pattern,
            )
            state = _Pattern(pattern, log_, self._published)
            with self._errors(f"subscribe {pattern}"):
                consuming = await self._connected().channel(publisher_confirms=False)
                state.channel = consuming
                await consuming.set_qos(prefetch_count=self.settings.prefetch)
                exchange = await self._declare_exchange(consuming, passive=True)
                # Robust queues get a client-generated name so they can be re-declared
                # after a reconnect; exclusive and auto-delete as a server-named one.
                queue = await consuming.declare_queue("", exclusive=True, auto_delete=True)
                await queue.bind(exchange, routing_key=pattern)
                await queue.consume(partial(self._received, state), no_ack=False)
            self._patterns[pattern] = state
            return state

    async def release(self, channel: str) -> None:
        """Forget a pattern once its hub has closed: its queue goes with its channel, its
        log leaves memory (the file stays for the next subscriber)."""
        async with self._declaring:
            state = self._patterns.pop(channel, None)
        if state is None:
            return
        state.log.close()
        if state.channel is not None:
            with contextlib.suppress(AMQPException, ChannelInvalidStateError, OSError):
                await state.channel.close()

    async def _received(self, state: _Pattern, message: AbstractIncomingMessage) -> None:
        state.received[message.routing_key or ""] += 1
        state.log.append(message_event(message), time.time())
        state.unacked.append((state.log.last, message))
        await self._acknowledge(state)

    async def _acknowledge(self, state: _Pattern) -> None:
        for message in state.finished():
            try:
                await message.ack()
            except (AMQPException, ChannelInvalidStateError, ConnectionError) as exc:
                # The channel it came on is gone (reconnect): the broker dropped it with
                # the exclusive queue, so there is nothing left to acknowledge.
                log.debug("ack not delivered", extra={"broker": self.name, "error": str(exc)})

    async def _caught_up(self, state: _Pattern) -> None:
        """Wait until every message this connector published (and the broker confirmed)
        to the pattern has reached its queue, so "from the live end" does not later
        deliver one of them as new. Messages of other publishers cannot be known here:
        for them the live end is what has arrived."""
        deadline = time.monotonic() + CATCH_UP_SECONDS
        while time.monotonic() < deadline:
            behind = [
                key
                for key, n in self._published.items()
                if state.matcher(key) and state.received[key] < n - state.baseline[key]
            ]
            if not behind:
                return
            await asyncio.sleep(0.005)

    async def position(self, channel: str) -> str | None:
        """The live end, once this connector's own confirmed publishes have arrived."""
        state = await self._pattern(channel)
        await self._caught_up(state)
        return state.log.position

    async def read_range(
        self,
        channel: str,
        from_cursor: str,
        until_cursor: str | None,
        *,
        max_events: int | None = None,
        max_age: float | None = None,
    ) -> AsyncIterator[Event | Gap]:
        state = await self._pattern(channel)
        async for item in state.log.read_range(
            from_cursor, until_cursor, max_events=max_events, max_age=max_age
        ):
            yield item

    async def subscribe(
        self, channel: str, from_cursor: str | None = None
    ) -> AsyncIterator[Event | Gap]:
        state = await self._pattern(channel)
        # Whatever the start, it is computed over a log that holds this connector's own
        # confirmed publishes: from a cursor too, evictions they cause are seen as a gap.
        await self._caught_up(state)
        state.log.trim(time.time())
        after, gap = state.log.start(from_cursor)
        reader = _Reader(after)
        waiter = asyncio.Event()
        state.readers.add(reader)
        state.log.waiters.add(waiter)
        try:
            if gap is not None:
                yield gap
            while True:
                waiter.clear()
                if after < state.log.evicted:  # this subscriber fell behind the buffer
                    yield Gap(f"{state.log.epoch}:{after}", state.log.oldest)
                    after = reader.position = state.log.evicted
                    await self._acknowledge(state)
                pending = state.log.after(after)
                for event in pending:
                    yield event
                    # Back for the next one: the caller is done with this event.
                    after = reader.position = after + 1
                    await self._acknowledge(state)
                if not pending:
                    await waiter.wait()
        finally:
            state.readers.discard(reader)
            state.log.waiters.discard(waiter)
            await self._acknowledge(state)
