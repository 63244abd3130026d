"""The publishing side of the Redis Streams transport: one entry per send, pipelined."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Unpack, cast

import redis.asyncio as aioredis

from .._batcher import PublishBatcher
from .._dispatch import AsyncClosing, Forwarding
from .._message import encode_send, prefixed_stream
from ._consumer import RedisConsumer
from ._wire import entry_fields, text

if TYPE_CHECKING:
    from ..._signal import Signal
    from ..._types import P
    from .._protocol import Signals
    from ._options import RedisConsumerOptions, SubscriberOptions

__all__ = ["RedisStreamTransport"]


class RedisStreamTransport(AsyncClosing, Forwarding):
    """
    Publishes the sends of named signals to Redis Streams, and makes their consumers.

    A send of signal ``name`` becomes an entry of stream ``{stream_prefix}{name}`` with the
    fields ``payload`` (the payload's pydantic JSON), ``sender`` (``module:qualname`` for a
    class, ``""`` for ``None``, else ``str(sender)``) and, when given, ``key`` (an idempotency
    key). Entries that cannot be handled end in the dead-letter stream
    ``{stream_prefix}dead``, so no signal may be named ``dead``.

    ``async with RedisStreamTransport(url) as transport:`` closes the client on exit.

    :param url: a Redis URL (``redis://host:6379/0``); or pass *client*
    :param client: a ``redis.asyncio.Redis`` to use instead; the transport does not close it
    :param stream_prefix: prepended to signal names to name their streams
    :param group: the consumer group of the consumers it makes
    :param maxlen: trim each stream to about this many entries on publish (``None``: never;
        acknowledged entries stay in the stream until trimmed)
    :raises TypeError: unless exactly one of *url* and *client* is given

    .. versionadded:: 0.1
    """

    forward_namespace = "aiosignals.redis"

    def __init__(
        self,
        url: str | None = None,
        *,
        client: aioredis.Redis | None = None,
        stream_prefix: str = "aiosignals:",
        group: str = "aiosignals",
        maxlen: int | None = None,
    ) -> None:
        if (url is None) == (client is None):
            raise TypeError("RedisStreamTransport needs a url or a client (exactly one)")
        if maxlen is not None and maxlen < 1:
            raise ValueError(f"maxlen must be positive, got {maxlen}")
        self._owns_client = client is None
        if client is None:
            assert url is not None
            client = aioredis.Redis.from_url(url, socket_connect_timeout=5.0)  # pyright: ignore[reportUnknownMemberType] -- **kwargs untyped upstream
        self.client: aioredis.Redis = client
        """The redis-py client it uses."""
        self.stream_prefix = stream_prefix
        """Prepended to signal names to name their streams."""
        self.group = group
        """The consumer group of its consumers."""
        self.maxlen = maxlen
        """Approximate length each stream is trimmed to on publish, or ``None``."""
        self.dead_letter_stream = f"{stream_prefix}dead"
        """Where entries that could not be handled go, with the error."""
        self._batcher = PublishBatcher(client)

    def __repr__(self) -> str:
        return f"<RedisStreamTransport prefix={self.stream_prefix!r} group={self.group!r}>"

    async def aclose(self) -> None:
        """Wait for the publishes in flight, then close the client if it created it from a URL."""
        await self._batcher.wait_sent()
        if self._owns_client:
            await self.client.aclose()

    def stream_name(self, signal: Signal[Any] | str) -> str:
        """
        Return the stream of *signal* (or of the signal of that name).

        :raises ValueError: if the signal has no name, or is named ``dead``
        """
        return prefixed_stream(self.stream_prefix, signal, self.dead_letter_stream)

    async def publish(
        self, signal: Signal[P], sender: Any, payload: P, *, key: str | None = None
    ) -> str:
        """
        Append a send of *signal* to its stream and return the entry id.

        Concurrent publishes share pipelines, in issue order; one cancelled before its
        pipeline is sent writes nothing, one cancelled after is written and logged.

        :param signal: a named signal
        :param sender: who sends; it travels as a label (see the class)
        :param payload: an instance of the signal's payload type (anything else is validated
            into it, as :meth:`Signal.send <aiosignals.Signal.send>` does)
        :param key: an idempotency key, handed to receivers as :attr:`StreamMessage.key`
        :raises ValueError: if the signal has no name
        :raises pydantic.ValidationError: if *payload* does not validate
        :raises TypeError: if a value of *payload* has no JSON form
        """
        stream = self.stream_name(signal)
        body, label = encode_send(signal, stream, sender, payload)
        fields = entry_fields(body, label, key)
        return text(await self._batcher.xadd(stream, fields, maxlen=self.maxlen))

    def consumer(
        self,
        signals: Signals,
        options: RedisConsumerOptions | None = None,
        **changes: Unpack[SubscriberOptions],
    ) -> RedisConsumer:
        """
        Return a :class:`RedisConsumer` of this transport; the options are its own.

        .. versionadded:: 0.1
        """
        return RedisConsumer(self, signals, options, **changes)

    async def dead_letters(self, count: int = 100) -> list[tuple[str, dict[str, str]]]:
        """
        Return the oldest *count* entries of the dead-letter stream, decoded as text.

        Each is ``(entry id, fields)``: the original fields and ``error``, ``stream``,
        ``message_id``, ``deliveries``, ``group`` and ``consumer`` (an original field of
        one of those names is kept as ``original_<name>``).
        """
        rows = cast(
            "list[tuple[bytes | str, dict[bytes | str, bytes | str]]]",
            await self.client.xrange(self.dead_letter_stream, count=count),
        )
        return [
            (text(entry_id), {text(k): text(v) for k, v in fields.items()})
            for entry_id, fields in rows
        ]
