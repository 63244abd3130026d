"""
What differs between FastStream's brokers, behind one small interface.

:class:`FastStreamTransport` speaks to a broker only through a :class:`BrokerAdapter`: where a
signal's messages go and how a group reads them, how many times a message has been
delivered, how it is redelivered and dead-lettered. Each broker gets its own adapter, and
what a broker cannot do raises :class:`~aiosignals.exceptions.UnsupportedByBroker`.

FastStream's broker and message types are generic and heavily overloaded; they are held as
``Any`` here, behind typed methods of our own.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import anyio
from faststream import AckPolicy, Context

from ..exceptions import UnsupportedByBroker

__all__ = ["BrokerAdapter", "Handler", "MessageArg", "adapter_for"]

MessageArg = Annotated[Any, Context("message")]
"""How a handler asks FastStream for the message itself (a ``StreamMessage`` subclass)."""

Handler = Callable[[Any], Awaitable[None]]
"""A subscriber's handler: called with FastStream's message."""


class BrokerAdapter:
    """
    The broker-specific part of a FastStream transport; the base states the defaults.

    :param broker: a FastStream broker
    :param prefix: prepended to signal names to name where their messages go
    """

    kind = "broker"
    """The broker's name, for messages."""
    keeps_alive = False
    """Whether a message in hand must be kept from timing out while its receivers run."""

    def __init__(self, broker: Any, prefix: str) -> None:
        self.broker = broker
        self.prefix: str = prefix
        self.dead_letter_stream: str = f"{prefix}dead"

    async def prepare(self, stream: str, group: str) -> None:
        """Create what *stream* needs so that *group* gets what is published from now on."""

    async def publish(self, stream: str, body: bytes, headers: dict[str, str]) -> None:
        """Publish one message to *stream*, durably."""
        raise NotImplementedError

    def subscribe(
        self, stream: str, group: str, consumer: str, handler: Handler, options: _Options
    ) -> Any:
        """Register (not start) a subscriber of *group* on *stream*; acknowledgement is ours."""
        raise NotImplementedError

    def subscriber(self, handler: Handler, *args: Any, **options: Any) -> Any:
        """
        Register *handler* on a new subscriber of the broker's, made with *args* and *options*.

        The consumer acknowledges each message itself once its receivers ran, nothing replies
        to a message, and the subscriber goes when its consumer stops (not ``persistent``).
        """
        subscriber = self.broker.subscriber(
            *args, ack_policy=AckPolicy.MANUAL, no_reply=True, persistent=False, **options
        )
        subscriber(handler)
        return subscriber

    def deliveries(self, message: Any) -> int:
        """Return how many times *message* has been delivered, 1 the first time."""
        return 1

    async def ack(self, message: Any) -> None:
        """Acknowledge *message*: its receivers ran."""
        await message.ack()

    async def retry(self, message: Any, delay: float) -> None:
        """Have *message* delivered again after about *delay* seconds."""
        raise UnsupportedByBroker(f"{self.kind} cannot redeliver one message")

    async def dead_letter(self, message: Any, headers: dict[str, str]) -> None:
        """Publish *message* with *headers* to the dead-letter stream, then acknowledge it."""
        await self.prepare(self.dead_letter_stream, "dead")
        await self.publish(self.dead_letter_stream, message.body, headers)
        await self.ack(message)

    async def keep_alive(self, message: Any) -> None:
        """Tell the broker that *message* is still being handled."""


class _Options:
    """The consumer options an adapter needs to subscribe."""

    def __init__(self, *, count: int, claim_idle: float) -> None:
        self.count: int = count
        self.claim_idle: float = claim_idle


class _Rabbit(BrokerAdapter):
    """
    RabbitMQ: a direct exchange named after the prefix, one quorum queue per signal and group.

    Quorum queues count deliveries (``x-delivery-count``), including those of a consumer
    whose connection died, and keep messages on disk.
    """

    kind = "RabbitMQ"

    def __init__(self, broker: Any, prefix: str) -> None:
        super().__init__(broker, prefix)
        from faststream.rabbit import ExchangeType, RabbitExchange

        self.exchange = RabbitExchange(
            prefix.rstrip(".") or "aiosignals", type=ExchangeType.DIRECT, durable=True
        )
        self._prepared: set[tuple[str, str]] = set()

    def _queue(self, stream: str, group: str) -> Any:
        from faststream.rabbit import QueueType, RabbitQueue

        return RabbitQueue(
            f"{stream}.{group}", queue_type=QueueType.QUORUM, durable=True, routing_key=stream
        )

    async def prepare(self, stream: str, group: str) -> None:
        if (stream, group) in self._prepared:
            return
        await self.broker.connect()
        exchange = await self.broker.declare_exchange(self.exchange)
        queue = await self.broker.declare_queue(self._queue(stream, group))
        await queue.bind(exchange, routing_key=stream)
        self._prepared.add((stream, group))

    async def publish(self, stream: str, body: bytes, headers: dict[str, str]) -> None:
        await self.broker.publish(
            body,
            exchange=self.exchange,
            routing_key=stream,
            headers=headers,
            message_id=headers["aiosignals-id"],
            persist=True,
        )

    def subscribe(
        self, stream: str, group: str, consumer: str, handler: Handler, options: _Options
    ) -> Any:
        from faststream.rabbit import Channel

        return self.subscriber(
            handler,
            self._queue(stream, group),
            self.exchange,
            channel=Channel(prefetch_count=options.count),
        )

    def deliveries(self, message: Any) -> int:
        # Quorum queues count earlier deliveries; a classic queue only says "redelivered".
        count = message.headers.get("x-delivery-count")
        if count is not None:
            return int(count) + 1
        return 2 if message.raw_message.redelivered else 1

    async def retry(self, message: Any, delay: float) -> None:
        # Held (unacknowledged) through the delay: a consumer that dies meanwhile hands it
        # back to the queue all the same.
        await anyio.sleep(delay)
        await message.nack(requeue=True)


class _Nats(BrokerAdapter):
    """
    NATS JetStream: one stream for every subject under the prefix.

    One durable pull consumer per signal and group; ``num_delivered`` counts deliveries,
    ``ack_wait`` hands the message of a dead consumer to another.
    """

    kind = "NATS JetStream"
    keeps_alive = True

    def __init__(self, broker: Any, prefix: str) -> None:
        super().__init__(broker, prefix)
        if not prefix.endswith("."):
            raise ValueError(f"on NATS the prefix must end with '.', got {prefix!r}")
        self.stream: str = re.sub(r"[^A-Za-z0-9_-]", "_", prefix.rstrip(".")) or "aiosignals"
        self._prepared = False

    async def prepare(self, stream: str, group: str) -> None:
        if self._prepared:
            return
        from nats.js.errors import BadRequestError

        connection = await self.broker.connect()
        try:
            await connection.jetstream().add_stream(name=self.stream, subjects=[f"{self.prefix}>"])
        except BadRequestError as exc:
            if exc.err_code != 10058:  # The stream exists already (any configuration).
                raise
        self._prepared = True

    async def publish(self, stream: str, body: bytes, headers: dict[str, str]) -> None:
        # Nats-Msg-Id: JetStream drops a duplicate published again within its window. A
        # dead letter keeps the message's id, so it needs one of its own.
        msg_id = headers["aiosignals-id"]
        if stream == self.dead_letter_stream:
            msg_id = f"{msg_id}:dead"
        await self.broker.publish(
            body, stream, headers={**headers, "Nats-Msg-Id": msg_id}, stream=self.stream
        )

    def subscribe(
        self, stream: str, group: str, consumer: str, handler: Handler, options: _Options
    ) -> Any:
        from faststream.nats import ConsumerConfig, DeliverPolicy, JStream, PullSub

        durable = re.sub(r"[^A-Za-z0-9_-]", "_", f"{group}_{stream}")
        return self.subscriber(
            handler,
            stream,
            stream=JStream(self.stream, declare=False),
            durable=durable,
            pull_sub=PullSub(batch_size=options.count, timeout=1.0),
            config=ConsumerConfig(ack_wait=options.claim_idle, deliver_policy=DeliverPolicy.ALL),
        )

    def deliveries(self, message: Any) -> int:
        return int(message.raw_message.metadata.num_delivered)

    async def retry(self, message: Any, delay: float) -> None:
        await message.nack(delay=delay)

    async def keep_alive(self, message: Any) -> None:
        await message.in_progress()


class _Kafka(BrokerAdapter):
    """
    Kafka: one topic per signal, one consumer group per group.

    Acknowledging commits the offset. Kafka has no per-message negative acknowledgement and
    no dead letter: a failed send cannot be redelivered alone, so :meth:`retry` and
    :meth:`dead_letter` raise.
    """

    kind = "Kafka"

    async def publish(self, stream: str, body: bytes, headers: dict[str, str]) -> None:
        await self.broker.publish(body, stream, headers=headers)

    def subscribe(
        self, stream: str, group: str, consumer: str, handler: Handler, options: _Options
    ) -> Any:
        return self.subscriber(
            handler,
            stream,
            group_id=group,
            auto_offset_reset="earliest",
        )

    async def retry(self, message: Any, delay: float) -> None:
        raise UnsupportedByBroker(_KAFKA_CANNOT)

    async def dead_letter(self, message: Any, headers: dict[str, str]) -> None:
        raise UnsupportedByBroker(_KAFKA_CANNOT)


_KAFKA_CANNOT = (
    "Kafka has no per-message negative acknowledgement and no dead letter: a message whose"
    " send failed cannot be redelivered alone or dead-lettered. Its offset is not committed,"
    " so it is delivered again when a consumer of the group restarts; give the signal"
    " errors='log' or 'collect' (so that a failing receiver does not fail the send), or use"
    " RabbitMQ, NATS JetStream or Redis for per-message retries"
)


class _Redis(BrokerAdapter):
    """
    Redis Streams through FastStream: one stream per signal, a consumer group per group.

    FastStream does not expose the delivery count of a stream entry, and an entry that is
    not acknowledged stays pending for good: a failed send is therefore redelivered by
    publishing it again with its delivery count (``aiosignals-deliveries``) and
    acknowledging the old entry. :class:`RedisStreamTransport` claims a dead consumer's
    entries as well; use it where that matters.
    """

    kind = "Redis"

    async def publish(self, stream: str, body: bytes, headers: dict[str, str]) -> None:
        await self.broker.publish(body, stream=stream, headers=headers)

    def subscribe(
        self, stream: str, group: str, consumer: str, handler: Handler, options: _Options
    ) -> Any:
        from faststream.redis import StreamSub

        return self.subscriber(
            handler,
            stream=StreamSub(
                stream, group=group, consumer=consumer, last_id="0", max_records=options.count
            ),
        )

    def deliveries(self, message: Any) -> int:
        return int(message.headers.get("aiosignals-deliveries", 1))

    async def retry(self, message: Any, delay: float) -> None:
        await anyio.sleep(delay)
        headers = {k: str(v) for k, v in message.headers.items() if k.startswith("aiosignals-")}
        headers["aiosignals-deliveries"] = str(self.deliveries(message) + 1)
        await self.publish(message.raw_message["channel"], message.body, headers)
        await message.ack()


def adapter_for(broker: Any, prefix: str) -> BrokerAdapter:
    """
    Return the adapter of *broker*, chosen by the FastStream package that defines it.

    :raises TypeError: if it is not a RabbitMQ, NATS, Kafka or Redis broker of FastStream
    """
    for cls in type(broker).__mro__:
        module = cls.__module__
        for package, adapter in _ADAPTERS.items():
            if module == package or module.startswith(f"{package}."):
                return adapter(broker, prefix)
    raise TypeError(
        f"{broker!r} is not a FastStream RabbitBroker, NatsBroker, KafkaBroker or RedisBroker"
    )


_ADAPTERS: dict[str, type[BrokerAdapter]] = {
    "faststream.rabbit": _Rabbit,
    "faststream.nats": _Nats,
    "faststream.kafka": _Kafka,
    "faststream.redis": _Redis,
}


def subscribe_options(*, count: int, claim_idle: float) -> _Options:
    """Return the options :meth:`BrokerAdapter.subscribe` takes."""
    return _Options(count=count, claim_idle=claim_idle)
