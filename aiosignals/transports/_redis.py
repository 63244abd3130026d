"""
Signals across processes over Redis Streams.

Each named signal has one stream, ``{stream_prefix}{signal.name}``. An entry holds the payload
as pydantic JSON, a label of the sender and, when the publisher has one, an idempotency key.
Consumers read through a consumer group, so each entry goes to one consumer of the group; it
is acknowledged only once its receivers ran, and a consumer that dies leaves its entries
pending until another one claims them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias, TypedDict, TypeVar, Unpack, cast, overload

import anyio
import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from .._backoff import backoff
from .._signal import Signal, registry
from ..models import dump_payload, load_payload
from ._batcher import PublishBatcher
from ._dispatch import Forwarding
from ._message import StreamMessage as StreamMessage
from ._message import current_message as current_message
from ._message import (
    delivering,
    require_name,
)
from ._message import resolve_sender as resolve_sender
from ._message import sender_label as sender_label

if TYPE_CHECKING:
    from types import TracebackType

    from redis.typing import EncodableT, FieldT, KeyT, StreamIdT

    from .._types import P

__all__ = [
    "RedisStreamTransport",
    "StreamMessage",
    "Subscriber",
    "SubscriberOptions",
    "current_message",
]

logger = logging.getLogger("aiosignals.redis")

_T = TypeVar("_T")

# What a dropped or refused connection raises: redis-py's own errors (BusyLoadingError, raised
# while a restarted server loads its AOF, is a ConnectionError) and the socket's.
_CONNECTION_ERRORS = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)

# What no retry can mend, so Subscriber.run() raises it: Redis refused the credentials (a
# wrong or missing password or user) or the user lacks the rights (ACL NOPERM). redis-py
# makes the first two ConnectionError subclasses, so they are caught before those.
FATAL_ERRORS: tuple[type[redis_errors.RedisError], ...] = (
    redis_errors.AuthenticationError,
    redis_errors.AuthorizationError,
    redis_errors.AuthenticationWrongNumberOfArgsError,
    redis_errors.NoPermissionError,
)

# Resets the idle time of the given entries that are still this consumer's (XCLAIM JUSTID
# does not count a delivery), atomically, so that an entry another consumer has claimed in
# the meantime is never taken back. KEYS: stream; ARGV: group, consumer, ids...
_TOUCH = """
local touched = {}
for i = 3, #ARGV do
  local entry = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)[1]
  if entry and entry[2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    touched[#touched + 1] = ARGV[i]
  end
end
return touched
"""

# Removes the consumer from the group only if it has no pending entries, atomically, so that
# an entry it holds can never be lost (DELCONSUMER drops a consumer's pending entries).
# KEYS: stream; ARGV: group, consumer. Returns 1 if removed, 0 if kept.
_LEAVE = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then
  return 0
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# Fields a dead-letter entry adds; an original field of the same name is kept as original_<name>.
_DEAD_FIELDS = ("error", "stream", "message_id", "deliveries", "group", "consumer")


_Signals: TypeAlias = Iterable[Signal[Any] | str] | Mapping[str, Signal[Any]] | Signal[Any]
"""The signals a consumer reads: signals, their names, a name-to-signal mapping, or one."""


class SubscriberOptions(TypedDict, total=False):
    """
    The keyword options of :class:`Subscriber`, as :meth:`RedisStreamTransport.consumer` takes them.

    .. versionadded:: 0.1
    """

    consumer: str | None
    count: int
    block: float
    claim_idle: float
    retry_delay: float
    max_deliveries: int
    start_id: str
    reconnect_delay: float
    max_reconnect_delay: float
    batch_ack: bool


# Two overloads: mypy infers Never for "Awaitable[T] | T" given a bare Awaitable[X].
@overload
async def _reply(value: Awaitable[_T]) -> _T: ...
@overload
async def _reply(value: Awaitable[_T] | _T) -> _T: ...
async def _reply(value: Awaitable[_T] | _T) -> _T:
    """
    Await a command of the asyncio client, whichever way the installed redis-py types it.

    redis-py before 6 annotates some commands (``EVAL``) with the sync client's
    ``Awaitable[T] | T``; later versions give the asyncio client ``Awaitable[T]``. The
    ``redis`` extra allows both, so the package must type-check on both.

    :param value: what the asyncio client's command returned.
    :return: its reply.
    """
    if inspect.isawaitable(value):
        return cast("_T", await value)
    return value


def _text(value: bytes | str | int) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


class RedisStreamTransport(Forwarding):
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

    async def __aenter__(self) -> RedisStreamTransport:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

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
        name = signal if isinstance(signal, str) else require_name(signal)
        stream = f"{self.stream_prefix}{name}"
        if stream == self.dead_letter_stream:
            raise ValueError(f"{stream!r} is the dead-letter stream: rename signal {name!r}")
        return stream

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
        if payload.__class__ is not signal.payload_type:
            payload = signal.payload_type.model_validate(payload)
        try:
            text = dump_payload(payload)
        except TypeError as exc:
            raise TypeError(
                f"cannot publish the payload of signal {signal.name!r} to the stream"
                f" {stream!r}: {exc}"
            ) from exc
        fields: dict[FieldT, EncodableT] = {"payload": text, "sender": sender_label(sender)}
        if key is not None:
            fields["key"] = key
        return _text(await self._batcher.xadd(stream, fields, maxlen=self.maxlen))

    def consumer(self, signals: _Signals, **options: Unpack[SubscriberOptions]) -> Subscriber:
        """
        Return a :class:`Subscriber` of this transport; the options are its own.

        .. versionadded:: 0.1
        """
        return Subscriber(self, signals, **options)

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
            (_text(entry_id), {_text(k): _text(v) for k, v in fields.items()})
            for entry_id, fields in rows
        ]


@dataclasses.dataclass(slots=True)
class _Entry:
    stream: str
    id: str
    fields: dict[bytes | str, bytes | str] | None  # None: trimmed from the stream since
    deliveries: int

    def field(self, name: str) -> bytes | str | None:
        if self.fields is None:
            return None
        value = self.fields.get(name.encode())
        return value if value is not None else self.fields.get(name)


class _UnknownSignalError(LookupError):
    pass


class Subscriber:
    """
    Consumes the streams of some signals and sends each entry to its signal's receivers.

    ``await subscriber.run()`` reads with a consumer group (created with ``MKSTREAM`` when
    missing), so consumers of one group share the entries, each entry going to one of them.
    For each entry it resolves the signal (an explicitly given signal wins over the process
    :data:`registry` of named signals), validates the JSON into the signal's payload type,
    calls ``await signal.send(sender, payload)`` with the signal's own mode and error
    policy, and acknowledges the entry (``XACK``) only after that send returned. Receivers
    get the entry through :func:`current_message`.

    Failures, and what becomes of the entry:

    - A send that raises (a receiver failing under the ``"raise"`` policy, a timeout...):
      the entry stays pending and is delivered again after *retry_delay*, doubling each
      time; after *max_deliveries* deliveries it goes to the dead-letter stream. Under the
      ``"collect"`` and ``"log"`` policies a failing receiver does not fail the send, so
      the entry is acknowledged.
    - A signal name that resolves to no signal in this process: retried like a failure (a
      consumer of the group that knows the signal, or a later deployment, may handle it).
    - A payload that is not JSON, does not validate, or is missing: straight to the
      dead-letter stream, since retrying cannot help.
    - A consumer that dies with entries pending: another consumer claims them
      (``XAUTOCLAIM``) once they have been idle *claim_idle* seconds and handles them;
      an entry delivered more than *max_deliveries* times goes to the dead-letter stream
      without running again (it may be what kills its consumers).

    The dead-letter entry has the original fields plus ``error`` and where it came from
    (see :meth:`RedisStreamTransport.dead_letters`); it is written and the entry
    acknowledged in one transaction, so nothing is lost. Delivery is at least once: a
    consumer killed after its receivers ran but before the acknowledgement makes the entry
    run again, so receivers should be idempotent (:attr:`StreamMessage.idempotency_key`).

    A dropped connection (Redis restarting, say) is logged and retried with exponential
    backoff and jitter, from *reconnect_delay* up to *max_reconnect_delay* seconds, for as
    long as it takes; the loop does not end on it. Refused credentials or rights (a wrong
    password, a user whose ACL lacks the stream commands) are not retried: :meth:`run`
    raises redis-py's error (``AuthenticationError``, ``NoPermissionError``...) with a note
    saying so.

    :param transport: the transport whose prefix, group and client it uses
    :param signals: what to consume: signals, signal names (resolved through the
        registry at each entry) or a mapping from names to signals
    :param consumer: this consumer's name in the group; default ``hostname:pid``. A
        consumer restarted under the same name first handles what it left pending. After a
        clean stop it leaves the group of each stream where it has nothing pending
        (``XGROUP DELCONSUMER``), so that restarts do not pile up consumers; where it has
        entries pending it stays, so that they are handled or claimed, never dropped
    :param count: entries read per round trip
    :param block: seconds one read waits for new entries
    :param claim_idle: seconds an entry must have been pending and idle before another
        consumer claims it. A running consumer refreshes the entries it holds every third
        of this (however long its receivers take), so only the entries of a consumer that
        died, or stalled its event loop that long, are claimed
    :param retry_delay: seconds before an entry whose send failed is tried again (doubling
        with each delivery, at most *claim_idle*)
    :param max_deliveries: deliveries of an entry before it goes to the dead-letter stream
    :param start_id: where a newly created group starts: ``"0"`` consumes what the stream
        already holds, ``"$"`` only what comes after
    :param reconnect_delay: the first pause after a connection error, in seconds
    :param max_reconnect_delay: the longest pause between reconnection attempts
    :param batch_ack: acknowledge the entries of one read in one ``XACK`` once the last
        one's receivers ran (default), or each once its own did (``False``): more round
        trips, but a consumer killed mid-batch has only the entry in hand delivered again
    :raises ValueError: if a signal has no name, or a number is out of range

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        transport: RedisStreamTransport,
        signals: _Signals,
        *,
        consumer: str | None = None,
        count: int = 100,
        block: float = 5.0,
        claim_idle: float = 30.0,
        retry_delay: float = 1.0,
        max_deliveries: int = 5,
        start_id: str = "0",
        reconnect_delay: float = 0.1,
        max_reconnect_delay: float = 10.0,
        batch_ack: bool = True,
    ) -> None:
        if count < 1 or max_deliveries < 1:
            raise ValueError("count and max_deliveries must be at least 1")
        if min(block, claim_idle, retry_delay, reconnect_delay, max_reconnect_delay) <= 0:
            raise ValueError(
                "block, claim_idle, retry_delay and the reconnect delays must be positive"
            )
        self.transport = transport
        """The transport it reads through."""
        self.name = consumer if consumer is not None else f"{socket.gethostname()}:{os.getpid()}"
        """Its consumer name in the group."""
        self.count = count
        """Entries read per round trip."""
        self.block = block
        """Seconds one read waits for new entries."""
        self.claim_idle = claim_idle
        """Seconds of idleness after which another consumer's pending entry is claimed."""
        self.retry_delay = retry_delay
        """Seconds before the first retry of a failed send."""
        self.max_deliveries = max_deliveries
        """Deliveries of an entry before it goes to the dead-letter stream."""
        self.start_id = start_id
        """Where a group this consumer creates starts reading."""
        self.reconnect_delay = reconnect_delay
        """The first pause after a connection error, in seconds."""
        self.max_reconnect_delay = max_reconnect_delay
        """The longest pause between reconnection attempts, in seconds."""
        self.batch_ack = batch_ack
        """Whether the entries of one read are acknowledged together."""
        self.handled = 0
        """Entries whose send succeeded (and that are acknowledged, or about to be)."""
        self.failed = 0
        """Sends that raised (each failed delivery counts)."""
        self.dead = 0
        """Entries it moved to the dead-letter stream."""

        # Explicit signals are held here, strongly: they win over the weak registry.
        self._signals: dict[str, Signal[Any] | None] = {}
        if isinstance(signals, Signal):
            signals = [signals]
        if isinstance(signals, Mapping):
            self._signals.update(cast("Mapping[str, Signal[Any]]", signals))
        else:
            for item in signals:
                if isinstance(item, str):
                    self._signals.setdefault(item, None)
                else:
                    self._signals[require_name(item)] = item
        if not self._signals:
            raise ValueError("a Subscriber needs at least one signal to consume")
        self._streams = {transport.stream_name(name): name for name in self._signals}

        self._stopping = False
        self._running = False
        self._scope: anyio.CancelScope | None = None
        self._ready = False
        self._backlog: dict[str, str] = {}
        self._claim_cursors: dict[str, str] = {}
        self._next_claim = 0.0
        self._retries: list[tuple[float, str, str]] = []
        self._unacked: dict[str, list[str]] = {}
        self._held: dict[str, set[str]] = {}  # Read, not yet acknowledged: kept fresh.

    def __repr__(self) -> str:
        group, streams = self.transport.group, len(self._streams)
        return f"<Subscriber {self.name!r} group={group!r} streams={streams}>"

    @property
    def streams(self) -> list[str]:
        """The streams it reads."""
        return list(self._streams)

    def stop(self) -> None:
        """
        Ask :meth:`run` to return after the entry in hand.

        A read waiting for new entries, or a pause before reconnecting, ends at once; an
        entry whose receivers are running is finished and acknowledged first. Entries read
        but not yet handled stay pending: this consumer handles them when it runs again
        under the same name, another one claims them after *claim_idle*. Safe to call from
        a signal handler of the event loop, and before or after :meth:`run`.
        """
        self._stopping = True
        if self._scope is not None:
            self._scope.cancel()

    async def run(self) -> None:
        """
        Consume until :meth:`stop` is called or the task is cancelled.

        Cancelling the task cancels the receivers in hand; their entry stays pending.

        :raises RuntimeError: if it is already running
        :raises redis.exceptions.RedisError: refused credentials or rights
            (``AuthenticationError``, ``NoPermissionError``...), or another error reply
        """
        if self._running:
            raise RuntimeError(f"{self!r} is already running")
        self._running = True
        self._ready = False
        attempt = 0
        # A plain asyncio task (redis.asyncio is asyncio-only): a task group would wrap the
        # loop's own exceptions in an ExceptionGroup.
        heartbeat = asyncio.ensure_future(self._heartbeat())
        try:
            while not self._stopping:
                try:
                    if not self._ready:
                        await self._prepare()
                    if self._unacked:
                        await self._flush_acks()  # Left over by an error mid-batch.
                    entries = await self._next_entries()
                    attempt = 0
                    for entry in entries:
                        self._held.setdefault(entry.stream, set()).add(entry.id)
                    for entry in entries:
                        await self._handle(entry)
                        if not self.batch_ack:
                            self._held[entry.stream].discard(entry.id)
                        if self._stopping:
                            break
                    if self._unacked:
                        await self._flush_acks()
                    self._held.clear()
                except FATAL_ERRORS as exc:
                    exc.add_note(
                        f"{self!r}: Redis refused this consumer: check the user and password"
                        " of the URL and the user's ACL; not retried"
                    )
                    raise
                except _CONNECTION_ERRORS as exc:
                    attempt += 1
                    self._ready = False
                    self._held.clear()  # The backlog read after reconnecting has them.
                    delay = self._backoff(attempt)
                    logger.warning(
                        "%r: Redis connection failed (%s: %s); retrying in %.2f s (attempt %d)",
                        self,
                        type(exc).__name__,
                        exc,
                        delay,
                        attempt,
                    )
                    await self._interruptible(anyio.sleep, delay)
                except redis_errors.ResponseError as exc:
                    if not str(exc).startswith(("NOGROUP", "UNBLOCKED")):
                        raise
                    # The stream or group vanished (deleted, maybe under a blocked read, or
                    # a server restarted without persistence): create them again, go on.
                    logger.warning("%r: %s; creating the consumer groups again", self, exc)
                    self._ready = False
            heartbeat.cancel()  # A clean stop: nothing in hand needs refreshing any more.
            await self._leave_group()
        finally:
            # State first, before any await: inside a cancelled anyio scope every await
            # raises again at once, and what follows it would never run (leaving this
            # subscriber "already running" for good).
            self._held.clear()
            self._running = False
            self._stopping = False
            heartbeat.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.wait([heartbeat])

    async def _heartbeat(self) -> None:
        """
        Keep the entries in hand from looking idle, so that no other consumer claims them.

        Entries read in one batch wait while the earlier ones run, and a receiver may run
        longer than *claim_idle*: every third of *claim_idle* their idle time is reset
        (only for those still this consumer's), so only a consumer that died, or stalled
        for longer than *claim_idle*, loses its entries to another.
        """
        client, group = self.transport.client, self.transport.group
        while True:
            await asyncio.sleep(self.claim_idle / 3)
            for stream, ids in list(self._held.items()):
                if not ids:
                    continue
                try:
                    await _reply(client.eval(_TOUCH, 1, stream, group, self.name, *ids))
                except (*_CONNECTION_ERRORS, redis_errors.ResponseError) as exc:
                    # The run loop reports and handles connection trouble; try next time.
                    logger.debug("%r: could not refresh the entries in hand: %s", self, exc)

    async def _leave_group(self) -> None:
        """
        Remove this consumer from the group of each stream where it has nothing pending.

        Called after a clean stop, so that consumers named ``hostname:pid`` do not pile up in
        ``XINFO CONSUMERS`` with every restart. Where entries are pending it stays, so that
        it handles them when it runs again under this name, or another consumer claims them.
        Best effort: Redis unreachable or the group gone leaves it as it is.
        """
        client, group = self.transport.client, self.transport.group
        # Bounded: a stop must not hang on a server that does not answer.
        with anyio.move_on_after(5.0):
            for stream in self._streams:
                try:
                    await _reply(client.eval(_LEAVE, 1, stream, group, self.name))
                except (*_CONNECTION_ERRORS, redis_errors.ResponseError) as exc:
                    logger.debug("%r: could not leave the group of %s: %s", self, stream, exc)

    # -- reading -------------------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        return backoff(attempt, base=self.reconnect_delay, cap=self.max_reconnect_delay)

    async def _interruptible(
        self, fn: Callable[..., Awaitable[_T]], *args: Any
    ) -> tuple[bool, _T | None]:
        """Await ``fn(*args)`` unless stop() interrupts it; return (done, result)."""
        with anyio.CancelScope() as scope:
            self._scope = scope
            if self._stopping:
                scope.cancel()
            try:
                return True, await fn(*args)
            finally:
                self._scope = None
        return False, None

    async def _prepare(self) -> None:
        client, group = self.transport.client, self.transport.group
        for stream in self._streams:
            try:
                await client.xgroup_create(stream, group, id=self.start_id, mkstream=True)
            except redis_errors.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        # First what this consumer left pending (after a restart under the same name, or
        # a read whose reply a dropped connection lost), then the rest.
        self._backlog = dict.fromkeys(self._streams, "0")
        self._claim_cursors = dict.fromkeys(self._streams, "0-0")
        self._retries.clear()  # The backlog read delivers those entries again anyway.
        self._ready = True

    async def _next_entries(self) -> list[_Entry]:
        if self._backlog:
            return await self._read_backlog()
        now = time.monotonic()
        if self._retries and self._retries[0][0] <= now:
            return await self._retry_due(now)
        if now >= self._next_claim:
            return await self._claim()
        wait = self._next_claim - now
        if self._retries:
            wait = min(wait, self._retries[0][0] - now)
        block_ms = max(1, int(min(self.block, wait) * 1000))
        streams: dict[KeyT, StreamIdT] = dict.fromkeys(self._streams, ">")
        done, reply = await self._interruptible(
            self.transport.client.xreadgroup,
            self.transport.group,
            self.name,
            streams,
            self.count,
            block_ms,
        )
        if not done:
            return []
        return [_Entry(stream, entry_id, fields, 1) for stream, entry_id, fields in _rows(reply)]

    async def _read_backlog(self) -> list[_Entry]:
        streams = cast("dict[KeyT, StreamIdT]", self._backlog.copy())
        reply = await self.transport.client.xreadgroup(
            self.transport.group, self.name, streams, self.count
        )
        rows = _rows(reply)
        seen = {stream for stream, _, _ in rows}
        for stream in list(self._backlog):
            if stream not in seen:
                del self._backlog[stream]
        for stream, entry_id, _ in rows:
            self._backlog[stream] = entry_id
        return await self._with_deliveries(rows)

    async def _retry_due(self, now: float) -> list[_Entry]:
        due: dict[str, list[StreamIdT]] = {}
        for _ in range(self.count):
            if not self._retries or self._retries[0][0] > now:
                break
            _, stream, entry_id = self._retries.pop(0)
            due.setdefault(stream, []).append(entry_id)
        rows: list[tuple[str, str, dict[bytes | str, bytes | str] | None]] = []
        min_idle = int(self.retry_delay * 1000 / 2)
        for stream, ids in due.items():
            # XCLAIM to ourselves counts a delivery; the idle floor keeps us from taking
            # back an entry another consumer claimed from us in the meantime.
            claimed = cast(
                "list[tuple[bytes | str, dict[bytes | str, bytes | str]]]",
                await self.transport.client.xclaim(
                    stream, self.transport.group, self.name, min_idle, ids
                ),
            )
            rows.extend((stream, _text(entry_id), fields) for entry_id, fields in claimed)
        return await self._with_deliveries(rows)

    async def _claim(self) -> list[_Entry]:
        client, group = self.transport.client, self.transport.group
        rows: list[tuple[str, str, dict[bytes | str, bytes | str] | None]] = []
        for stream, cursor in self._claim_cursors.items():
            reply = await client.xautoclaim(
                stream,
                group,
                self.name,
                min_idle_time=int(self.claim_idle * 1000),
                start_id=cursor,
                count=self.count,
            )
            self._claim_cursors[stream] = _text(reply[0])
            claimed = cast("list[tuple[bytes | str, dict[bytes | str, bytes | str]]]", reply[1])
            if claimed:
                logger.info(
                    "%r: claimed %d entries of %s pending more than %s s",
                    self,
                    len(claimed),
                    stream,
                    self.claim_idle,
                )
            rows.extend((stream, _text(entry_id), fields or None) for entry_id, fields in claimed)
            if len(reply) > 2 and reply[2]:
                logger.warning(
                    "%r: %d pending entries of %s were trimmed from the stream before being"
                    " handled",
                    self,
                    len(reply[2]),
                    stream,
                )
        if all(cursor in ("0-0", "0") for cursor in self._claim_cursors.values()):
            # The whole pending list was scanned: look again in half an idle period.
            self._next_claim = time.monotonic() + self.claim_idle / 2
        return await self._with_deliveries(rows)

    async def _with_deliveries(
        self, rows: list[tuple[str, str, dict[bytes | str, bytes | str] | None]]
    ) -> list[_Entry]:
        """Look up how often each re-read entry has been delivered (XPENDING)."""
        if not rows:
            return []
        async with self.transport.client.pipeline(transaction=False) as pipe:
            for stream, entry_id, _ in rows:
                pipe.xpending_range(stream, self.transport.group, entry_id, entry_id, 1)
            replies = await pipe.execute()
        entries: list[_Entry] = []
        for (stream, entry_id, fields), reply in zip(rows, replies, strict=True):
            pending = cast("list[dict[str, Any]]", reply)
            if not pending or _text(pending[0]["consumer"]) != self.name:
                continue  # Acknowledged or taken by another consumer since: not ours.
            entries.append(_Entry(stream, entry_id, fields, int(pending[0]["times_delivered"])))
        return entries

    # -- handling ------------------------------------------------------------------------

    async def _handle(self, entry: _Entry) -> None:
        name = self._streams[entry.stream]
        if entry.fields is None:
            # Trimmed from the stream while pending: nothing left to deliver.
            await self._until_done(entry.id, functools.partial(self._ack, entry))
            return
        if entry.deliveries > self.max_deliveries:
            await self._bury_until_done(
                entry,
                f"delivered {entry.deliveries} times (max_deliveries={self.max_deliveries})"
                " without being acknowledged: its consumers stopped while handling it",
            )
            return
        raw = entry.field("payload")
        if raw is None:
            await self._bury_until_done(entry, "the entry has no 'payload' field")
            return
        signal = self._signals.get(name)
        if signal is None:
            signal = registry.get(name)
        if signal is None:
            await self._failed(
                entry, _UnknownSignalError(f"no signal named {name!r} in this process")
            )
            return
        sender = resolve_sender(_text(entry.field("sender") or ""))
        try:
            payload = load_payload(signal.payload_type, sender, _text(raw))
        except ValueError as exc:
            await self._bury_until_done(
                entry,
                f"payload does not validate as {signal.payload_type.__qualname__}: {exc}",
            )
            return
        key = entry.field("key")
        message = StreamMessage(
            id=entry.id,
            stream=entry.stream,
            signal=name,
            deliveries=entry.deliveries,
            key=None if key is None else _text(key),
            group=self.transport.group,
            consumer=self.name,
        )
        try:
            with delivering(message):
                await signal.send(sender, payload)
        except Exception as exc:  # noqa: BLE001 -- any failure is retried, then dead-lettered
            await self._failed(entry, exc)
            return
        self.handled += 1
        if self.batch_ack:
            self._unacked.setdefault(entry.stream, []).append(entry.id)
        else:
            await self._until_done(entry.id, functools.partial(self._ack, entry))

    async def _failed(self, entry: _Entry, exc: Exception) -> None:
        self.failed += 1
        known = isinstance(exc, _UnknownSignalError)
        error = str(exc) if known else f"{type(exc).__name__}: {exc}"
        if entry.deliveries >= self.max_deliveries:
            await self._bury_until_done(entry, f"{error} (after {entry.deliveries} deliveries)")
            return
        delay = min(self.claim_idle, self.retry_delay * 2 ** (entry.deliveries - 1))
        logger.warning(
            "%r: entry %s of %s failed on delivery %d (%s); retrying in %.2f s",
            self,
            entry.id,
            entry.stream,
            entry.deliveries,
            error,
            delay,
            exc_info=not known,
        )
        # It stays pending; _retry_due() claims it back when due. Should this consumer die
        # first, another one claims it after claim_idle.
        # Once per entry: it may have come back through a claim while already scheduled.
        self._retries = [r for r in self._retries if r[1:] != (entry.stream, entry.id)]
        self._retries.append((time.monotonic() + delay, entry.stream, entry.id))
        self._retries.sort()

    async def _flush_acks(self) -> None:
        client, group = self.transport.client, self.transport.group
        while self._unacked:
            stream, ids = next(iter(self._unacked.items()))
            await self._until_done(
                f"{len(ids)} entries", functools.partial(client.xack, stream, group, *ids)
            )
            del self._unacked[stream]

    async def _until_done(self, what: str, fn: Callable[[], Awaitable[object]]) -> None:
        """Acknowledge (or bury) *what* with *fn*, retrying through connection errors."""
        attempt = 0
        while True:
            try:
                await fn()
            except FATAL_ERRORS:
                raise  # run() reports it: retrying cannot help.
            except _CONNECTION_ERRORS as exc:
                attempt += 1
                if self._stopping:
                    # Given up: the entry stays pending and will be delivered again.
                    logger.warning(
                        "%r: could not acknowledge %s before stopping (%s)", self, what, exc
                    )
                    return
                delay = self._backoff(attempt)
                logger.warning(
                    "%r: Redis connection failed acknowledging %s (%s); retrying in %.2f s",
                    self,
                    what,
                    exc,
                    delay,
                )
                await self._interruptible(anyio.sleep, delay)
            else:
                return

    async def _bury_until_done(self, entry: _Entry, error: str) -> None:
        await self._until_done(entry.id, functools.partial(self._bury, entry, error))

    async def _ack(self, entry: _Entry) -> None:
        await self.transport.client.xack(entry.stream, self.transport.group, entry.id)

    async def _bury(self, entry: _Entry, error: str) -> None:
        fields: dict[FieldT, EncodableT] = {}
        for raw_name, value in (entry.fields or {}).items():
            field_name = _text(raw_name)
            fields[f"original_{field_name}" if field_name in _DEAD_FIELDS else raw_name] = value
        fields.update(
            error=error,
            stream=entry.stream,
            message_id=entry.id,
            deliveries=entry.deliveries,
            group=self.transport.group,
            consumer=self.name,
        )
        async with self.transport.client.pipeline(transaction=True) as pipe:
            pipe.xadd(self.transport.dead_letter_stream, fields)
            pipe.xack(entry.stream, self.transport.group, entry.id)
            await pipe.execute()
        self.dead += 1
        logger.error(
            "%r: moved entry %s of %s to %s: %s",
            self,
            entry.id,
            entry.stream,
            self.transport.dead_letter_stream,
            error,
        )


def _rows(reply: Any) -> list[tuple[str, str, dict[bytes | str, bytes | str] | None]]:
    """Flatten an XREADGROUP reply, RESP2 (a list) or RESP3 (a dict), to (stream, id, fields)."""
    if not reply:
        return []
    pairs: Iterable[Any] = (
        cast("Mapping[Any, Any]", reply).items() if isinstance(reply, dict) else reply
    )
    rows: list[tuple[str, str, dict[bytes | str, bytes | str] | None]] = []
    for stream, items in cast("Iterable[tuple[bytes | str, Any]]", pairs):
        # RESP3 wraps each stream's entries in one more list.
        entries = items[0] if items and isinstance(items[0], list) else items
        for entry_id, fields in cast(
            "list[tuple[bytes | str, dict[bytes | str, bytes | str] | None]]", entries
        ):
            rows.append((_text(stream), _text(entry_id), fields or None))
    return rows
