"""
Signals across processes over any FastStream broker: RabbitMQ, NATS JetStream, Kafka, Redis.

FastStream is the maintained, typed Python client of those brokers; this module only maps
the transport protocol onto it (see :mod:`._brokers` for what differs between brokers).
A message's body is the payload's pydantic JSON; its headers carry the sender's label
(``aiosignals-sender``), the id the publisher gave it (``aiosignals-id``, the same on every
delivery) and the idempotency key (``aiosignals-key``) when there is one.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlsplit

import anyio

from .._service import Stopper
from ..exceptions import UnsupportedByBroker
from ._brokers import BrokerAdapter, MessageArg, adapter_for, subscribe_options
from ._dispatch import (
    AsyncClosing,
    Forwarding,
    Outcome,
    Tally,
    Verdict,
    dispatch,
    redelivery_delay,
    signal_map,
)
from ._message import StreamMessage, encode_send, prefixed_stream

if TYPE_CHECKING:
    from .._signal import Signal
    from .._types import P
    from ._protocol import Signals

__all__ = ["FastStreamConsumer", "FastStreamTransport", "broker_from_url"]

logger = logging.getLogger("aiosignals.transports")

_SCHEMES = {
    "amqp": "rabbit",
    "amqps": "rabbit",
    "nats": "nats",
    "tls": "nats",
    "redis": "redis",
    "rediss": "redis",
    "kafka": "kafka",
}


def broker_from_url(url: str) -> Any:
    """
    Return the FastStream broker for *url*, chosen by its scheme.

    ``amqp://`` and ``amqps://`` give a ``RabbitBroker``, ``nats://`` a ``NatsBroker``,
    ``redis://`` a ``RedisBroker`` and ``kafka://host:port[,host:port]`` a ``KafkaBroker``
    of those bootstrap servers.

    :raises ValueError: for any other scheme
    :raises ImportError: if FastStream or the broker's client is not installed

    .. versionadded:: 0.1
    """
    scheme = urlsplit(url).scheme
    kind = _SCHEMES.get(scheme)
    if kind is None:
        raise ValueError(
            f"{url!r}: expected an amqp://, amqps://, nats://, redis://, rediss:// or kafka:// URL"
        )
    try:
        if kind == "rabbit":
            from faststream.rabbit import RabbitBroker

            return RabbitBroker(url)
        if kind == "nats":
            from faststream.nats import NatsBroker

            return NatsBroker(url)
        if kind == "redis":
            from faststream.redis import RedisBroker

            return RedisBroker(url)
        from faststream.kafka import KafkaBroker

        return KafkaBroker(url.partition("://")[2].rstrip("/").split(","))
    except ImportError as exc:
        extra = "faststream[kafka]" if kind == "kafka" else "aiosignals[faststream]"
        raise ImportError(f"{url.partition(':')[0]}:// needs {exc}: pip install {extra!r}") from exc


class FastStreamTransport(AsyncClosing, Forwarding):
    """
    Publishes the sends of named signals through a FastStream broker, and makes consumers.

    A send of signal ``name`` goes to ``{prefix}{name}``: on RabbitMQ a direct exchange
    named after the prefix routes it to one quorum queue per group
    (``{prefix}{name}.{group}``); on NATS it is a subject of the JetStream stream that
    holds every subject under the prefix, read by one durable pull consumer per group; on
    Kafka a topic read by a consumer group; on Redis a stream read by a consumer group.
    What cannot be handled goes to ``{prefix}dead`` with the error in its headers, so no
    signal may be named ``dead``.

    What each broker allows:

    - RabbitMQ and NATS JetStream: everything the protocol promises. A message a dead
      consumer held goes back to the queue when its connection drops (RabbitMQ), or after
      *claim_idle* seconds (NATS ``ack_wait``; a live consumer keeps the message in hand
      from timing out, however long its receivers take).
    - Redis: redelivery by publishing the entry again with its count; entries a dead
      consumer left stay pending (FastStream does not claim them): prefer
      :class:`RedisStreamTransport` on Redis.
    - Kafka: acknowledging commits the offset, and a dead consumer's uncommitted messages
      go to another consumer of the group; but Kafka has no per-message negative
      acknowledgement or dead letter, so a failed send makes the consumer raise
      :class:`~aiosignals.exceptions.UnsupportedByBroker` instead of dropping the message.

    ``async with FastStreamTransport(broker) as transport:`` connects the broker, and on
    exit stops it if the transport made it (:meth:`from_url`).

    :param broker: a FastStream ``RabbitBroker``, ``NatsBroker``, ``KafkaBroker`` or
        ``RedisBroker``, connected or not
    :param prefix: prepended to signal names to name where their messages go
    :param group: the consumer group of its consumers, and the one whose queue every
        publish reaches on RabbitMQ even before any consumer ran
    :raises TypeError: if *broker* is none of those

    .. versionadded:: 0.1
    """

    forward_namespace = "aiosignals.faststream"

    def __init__(
        self, broker: Any, *, prefix: str = "aiosignals.", group: str = "aiosignals"
    ) -> None:
        self.broker: Any = broker
        """The FastStream broker it uses."""
        self.prefix: str = prefix
        """Prepended to signal names to name where their messages go."""
        self.group: str = group
        """The default consumer group."""
        self.adapter: BrokerAdapter = adapter_for(broker, prefix)
        """What is specific to the broker."""
        self.dead_letter_stream: str = self.adapter.dead_letter_stream
        """Where messages that could not be handled go, with the error."""
        self._owns_broker = False

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = "aiosignals.", group: str = "aiosignals"
    ) -> FastStreamTransport:
        """
        Return a transport over a broker of its own for *url*, stopped on exit.

        The broker is chosen by :func:`broker_from_url`.
        """
        transport = cls(broker_from_url(url), prefix=prefix, group=group)
        transport._owns_broker = True
        return transport

    def __repr__(self) -> str:
        return f"<FastStreamTransport {self.adapter.kind} prefix={self.prefix!r}>"

    async def __aenter__(self) -> Self:
        await self.broker.connect()
        return self

    async def aclose(self) -> None:
        """Stop the broker if the transport made it."""
        if self._owns_broker:
            await self.broker.stop()

    def stream_name(self, signal: Signal[Any] | str) -> str:
        """
        Return where the messages of *signal* (or of the signal of that name) go.

        :raises ValueError: if the signal has no name, or is named ``dead``
        """
        return prefixed_stream(self.prefix, signal, self.dead_letter_stream)

    async def publish(
        self, signal: Signal[P], sender: Any, payload: P, *, key: str | None = None
    ) -> str:
        """
        Publish a send of *signal* and return the message id it was given.

        :param key: an idempotency key, handed to receivers as :attr:`StreamMessage.key`
        :raises ValueError: if the signal has no name
        :raises pydantic.ValidationError: if *payload* does not validate
        :raises TypeError: if a value of *payload* has no JSON form
        """
        stream = self.stream_name(signal)
        body, label = encode_send(signal, stream, sender, payload)
        message_id = uuid.uuid4().hex
        headers = {"aiosignals-id": message_id, "aiosignals-sender": label}
        if key is not None:
            headers["aiosignals-key"] = key
        await self.adapter.prepare(stream, self.group)
        await self.adapter.publish(stream, body.encode(), headers)
        return message_id

    def consumer(
        self,
        signals: Signals,
        *,
        group: str | None = None,
        consumer: str | None = None,
        max_deliveries: int = 5,
        retry_delay: float = 1.0,
        claim_idle: float = 30.0,
        count: int = 10,
    ) -> FastStreamConsumer:
        """
        Return a consumer of *signals*; see :class:`FastStreamConsumer` for the options.

        :raises ValueError: if a signal has no name, or a number is out of range
        """
        return FastStreamConsumer(
            self,
            signals,
            group=self.group if group is None else group,
            consumer=consumer,
            max_deliveries=max_deliveries,
            retry_delay=retry_delay,
            claim_idle=claim_idle,
            count=count,
        )


_start_locks: weakref.WeakKeyDictionary[Any, anyio.Lock] = weakref.WeakKeyDictionary()


def _start_lock(broker: Any) -> anyio.Lock:
    """Return the lock under which consumers of *broker* register and start subscribers."""
    lock = _start_locks.get(broker)
    if lock is None:
        lock = _start_locks[broker] = anyio.Lock()
    return lock


class FastStreamConsumer(Tally):
    """
    Consumes the messages of some signals through a :class:`FastStreamTransport`.

    ``await consumer.run()`` starts one FastStream subscriber per signal on the transport's
    broker (connecting it if needed; starting it, and so its other subscribers, if it is not
    running yet) and returns after :meth:`stop`. For each message it
    resolves the signal (an explicitly given signal wins over the registry), validates the
    payload, sends it with the signal's own mode and error policy, and acknowledges the
    message only after that send returned. A send that raises is redelivered after
    *retry_delay* seconds (doubling with each delivery); after *max_deliveries* deliveries
    the message goes to the dead-letter stream with the error. A payload that does not
    validate goes there at once; so does a message delivered more than *max_deliveries*
    times without an outcome (its consumers kept dying while handling it).

    :param transport: the transport whose broker and prefix it uses
    :param signals: signals, signal names or a name-to-signal mapping
    :param group: its consumer group
    :param consumer: its name, as receivers see it (default ``hostname:pid``)
    :param max_deliveries: deliveries of a message before it is dead-lettered
    :param retry_delay: seconds before the first redelivery of a failed send
    :param claim_idle: on NATS, seconds after which the message of a consumer that stopped
        answering goes to another (``ack_wait``); a live consumer keeps its message in hand
        alive every third of it
    :param count: messages fetched ahead (RabbitMQ prefetch, NATS batch)
    :raises ValueError: if a signal has no name, or a number is out of range

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        transport: FastStreamTransport,
        signals: Signals,
        *,
        group: str,
        consumer: str | None = None,
        max_deliveries: int = 5,
        retry_delay: float = 1.0,
        claim_idle: float = 30.0,
        count: int = 10,
    ) -> None:
        if max_deliveries < 1 or count < 1:
            raise ValueError("max_deliveries and count must be at least 1")
        if retry_delay < 0 or claim_idle <= 0:
            raise ValueError("retry_delay must not be negative, claim_idle must be positive")
        self.transport = transport
        """The transport it reads through."""
        self.group: str = group
        """Its consumer group."""
        self.name: str = (
            consumer if consumer is not None else f"{socket.gethostname()}:{os.getpid()}"
        )
        """Its name, as receivers see it."""
        self.max_deliveries: int = max_deliveries
        """Deliveries of a message before it is dead-lettered."""
        self.retry_delay: float = retry_delay
        """Seconds before the first redelivery of a failed send."""
        self.claim_idle: float = claim_idle
        """Seconds after which the message of a silent consumer goes to another (NATS)."""
        self.count: int = count
        """Messages fetched ahead."""
        self._signals = signal_map(signals)
        self._streams = {name: transport.stream_name(name) for name in self._signals}
        self._stops = Stopper()
        self._fatal: BaseException | None = None
        self._subscribed = False
        self._in_hand: set[Any] = set()  # FastStream messages whose receivers run.

    def __repr__(self) -> str:
        return f"<FastStreamConsumer {self.name!r} group={self.group!r}>"

    @property
    def subscribed(self) -> bool:
        """Whether :meth:`run` has started its subscribers: messages flow from now on."""
        return self._subscribed

    def stop(self) -> None:
        """
        Ask :meth:`run` to return; messages whose receivers are running are finished first.

        Safe to call from a signal handler of the event loop, and before or after :meth:`run`.
        """
        self._stops.stop()

    async def run(self) -> None:
        """
        Consume until :meth:`stop` is called or the task is cancelled.

        :raises RuntimeError: if it is already running
        :raises ~aiosignals.exceptions.UnsupportedByBroker: if a message needs what the
            broker cannot do (on Kafka: redelivering or dead-lettering one message)
        """
        with self._stops.running(self):
            await self._run()
        if self._fatal is not None:
            raise self._fatal

    async def _run(self) -> None:
        self._fatal = None
        adapter = self.transport.adapter
        options = subscribe_options(count=self.count, claim_idle=self.claim_idle)
        subscribers: list[Any] = []
        try:
            broker = self.transport.broker
            await broker.connect()
            for stream in self._streams.values():
                await adapter.prepare(stream, self.group)
            # Registering and starting in one turn per broker: a broker.start() of another
            # consumer must not start (a second time) subscribers we start ourselves.
            async with _start_lock(broker):
                for name, stream in self._streams.items():
                    handler = self._handler(name, stream)
                    subscribers.append(
                        adapter.subscribe(stream, self.group, self.name, handler, options)
                    )
                if broker.running:
                    for subscriber in subscribers:
                        await subscriber.start()
                else:
                    # Starts every subscriber of the broker, ours included; FastStream's
                    # test brokers (TestKafkaBroker...) fake exactly this.
                    await broker.start()
            self._subscribed = True
            async with anyio.create_task_group() as tasks:
                if adapter.keeps_alive:
                    tasks.start_soon(self._heartbeat)
                await self._stops.wait_until_stopped()
                tasks.cancel_scope.cancel()
        finally:
            self._subscribed = False
            with anyio.CancelScope(shield=True):
                for subscriber in subscribers:
                    await subscriber.stop()

    def _handler(self, name: str, stream: str) -> Callable[[Any], Awaitable[None]]:
        async def handle(message: MessageArg) -> None:
            await self._handle(name, stream, message)

        handle.__qualname__ = f"aiosignals[{name}]"
        return handle

    async def _handle(self, name: str, stream: str, raw: Any) -> None:
        adapter = self.transport.adapter
        headers: dict[str, Any] = raw.headers
        message = StreamMessage(
            id=str(headers.get("aiosignals-id") or raw.message_id),
            stream=stream,
            signal=name,
            deliveries=adapter.deliveries(raw),
            key=headers.get("aiosignals-key"),
            group=self.group,
            consumer=self.name,
        )
        body: bytes = raw.body
        try:
            payload = body.decode() if body else None
        except UnicodeDecodeError:
            payload = None
        sender = str(headers.get("aiosignals-sender", ""))
        self._in_hand.add(raw)
        try:
            verdict = await dispatch(self._signals, message, payload, sender, self.max_deliveries)
            await self._settle(raw, message, verdict)
        except UnsupportedByBroker as exc:
            # Not acknowledged: the broker delivers it again once the consumer restarts.
            self._fatal = exc
            self.stop()
        finally:
            self._in_hand.discard(raw)

    async def _heartbeat(self) -> None:
        """
        Keep the messages in hand from timing out, however long their receivers take.

        Every third of *claim_idle* the broker is told that each of them is still being
        handled (NATS ``in_progress``), so only a consumer that died loses them to another.
        """
        while True:
            await anyio.sleep(self.claim_idle / 3)
            for raw in list(self._in_hand):
                try:
                    await self.transport.adapter.keep_alive(raw)
                except Exception as exc:  # noqa: BLE001 -- the broker redelivers at worst
                    logger.warning("%r: could not keep a message alive: %s", self, exc)

    async def _settle(self, raw: Any, message: StreamMessage, verdict: Verdict) -> None:
        adapter = self.transport.adapter
        if verdict.failed:
            self.failed += 1
        if verdict.outcome is Outcome.ACK:
            await adapter.ack(raw)
            self.handled += 1
            return
        if verdict.outcome is Outcome.RETRY:
            delay = redelivery_delay(message.deliveries, self.retry_delay, self.claim_idle)
            await adapter.retry(raw, delay)
            return
        error = verdict.error or ""
        headers = {k: str(v) for k, v in raw.headers.items() if str(k).startswith("aiosignals-")}
        headers.update(
            {
                "aiosignals-error": error,
                "aiosignals-stream": message.stream,
                "aiosignals-deliveries": str(message.deliveries),
                "aiosignals-group": self.group,
                "aiosignals-consumer": self.name,
            }
        )
        await adapter.dead_letter(raw, headers)
        self.dead += 1
