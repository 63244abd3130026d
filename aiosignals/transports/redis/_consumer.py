"""
The consuming side of the Redis Streams transport: the run loop, handling, acks, dead letters.

What to read next, and the pending entries list, are :mod:`._pending`'s; what an entry holds
is :mod:`._wire`'s; what one message's send comes to is :func:`.._dispatch.dispatch`'s.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar, Unpack, overload

import anyio
from redis import exceptions as redis_errors

from ..._backoff import backoff
from ..._service import Stopper
from .._dispatch import Outcome, Tally, dispatch, redelivery_delay, signal_map
from .._message import StreamMessage
from ._errors import CONNECTION_ERRORS, FATAL_ERRORS, is_vanished_group
from ._options import RedisConsumerOptions, SubscriberOptions
from ._pending import Reader
from ._wire import Entry, dead_letter_fields

if TYPE_CHECKING:
    from .._protocol import Signals
    from ._publisher import RedisStreamTransport

__all__ = ["RedisConsumer"]

logger = logging.getLogger("aiosignals.redis")

_T = TypeVar("_T")

_DEFAULTS = RedisConsumerOptions()


class _Option(Generic[_T]):
    """A consumer attribute that reads the field of the same name of its options."""

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self._name = name

    @overload
    def __get__(self, consumer: None, owner: type[Any]) -> _Option[_T]: ...
    @overload
    def __get__(self, consumer: RedisConsumer, owner: type[Any]) -> _T: ...
    def __get__(self, consumer: RedisConsumer | None, owner: type[Any]) -> _Option[_T] | _T:
        if consumer is None:
            return self
        value: _T = getattr(consumer.options, self._name)
        return value


class RedisConsumer(Tally):
    """
    Consumes the streams of some signals and sends each entry to its signal's receivers.

    ``await consumer.run()`` reads with a consumer group (created with ``MKSTREAM`` when
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
    saying so. After a clean stop the consumer leaves the group of each stream where it has
    nothing pending (``XGROUP DELCONSUMER``), so that restarts do not pile up consumers.

    :param transport: the transport whose prefix, group and client it uses
    :param signals: what to consume: signals, signal names (resolved through the
        registry at each entry) or a mapping from names to signals
    :param options: how it reads, retries and gives up (default: the defaults of
        :class:`RedisConsumerOptions`)
    :param changes: fields of :class:`RedisConsumerOptions` that override *options*
    :raises ValueError: if a signal has no name, or a number is out of range

    .. versionadded:: 0.2
       Named ``Subscriber`` before, a name kept as a deprecated alias.
    """

    # Read-only views of self.options, as the attributes of the same names always were.
    count = _Option[int]()
    """Entries read per round trip (:attr:`RedisConsumerOptions.count`)."""
    block = _Option[float]()
    """Seconds one read waits for new entries (:attr:`RedisConsumerOptions.block`)."""
    claim_idle = _Option[float]()
    """Seconds before an idle entry is claimed (:attr:`RedisConsumerOptions.claim_idle`)."""
    retry_delay = _Option[float]()
    """Seconds before the first retry (:attr:`RedisConsumerOptions.retry_delay`)."""
    max_deliveries = _Option[int]()
    """Deliveries before the dead-letter stream (:attr:`RedisConsumerOptions.max_deliveries`)."""
    start_id = _Option[str]()
    """Where a group it creates starts (:attr:`RedisConsumerOptions.start_id`)."""
    reconnect_delay = _Option[float]()
    """The first pause after a connection error (:attr:`RedisConsumerOptions.reconnect_delay`)."""
    max_reconnect_delay = _Option[float]()
    """The longest pause (:attr:`RedisConsumerOptions.max_reconnect_delay`)."""
    batch_ack = _Option[bool]()
    """Whether a read batch is acknowledged at once (:attr:`RedisConsumerOptions.batch_ack`)."""

    def __init__(
        self,
        transport: RedisStreamTransport,
        signals: Signals,
        options: RedisConsumerOptions | None = None,
        **changes: Unpack[SubscriberOptions],
    ) -> None:
        options = _DEFAULTS if options is None else options
        self.options: RedisConsumerOptions = (
            dataclasses.replace(options, **changes) if changes else options
        )
        """What it was made with; its fields are also its attributes (``consumer.count``)."""
        self.transport = transport
        """The transport it reads through."""
        self.name: str = self.options.consumer or f"{socket.gethostname()}:{os.getpid()}"
        """Its consumer name in the group."""
        # Explicit signals are held here, strongly: they win over the weak registry.
        self._signals = signal_map(signals)
        self._streams = {transport.stream_name(name): name for name in self._signals}
        self._reader = Reader(
            transport.client, transport.group, self.name, list(self._streams), self.options, self
        )
        self._stops = Stopper()
        self._ready = False
        self._unacked: dict[str, list[str]] = {}
        self._held: dict[str, set[str]] = {}  # Read, not yet acknowledged: kept fresh.

    def __repr__(self) -> str:
        group, streams = self.transport.group, len(self._streams)
        return f"<RedisConsumer {self.name!r} group={group!r} streams={streams}>"

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
        self._stops.stop()

    async def run(self) -> None:
        """
        Consume until :meth:`stop` is called or the task is cancelled.

        Cancelling the task cancels the receivers in hand; their entry stays pending.

        :raises RuntimeError: if it is already running
        :raises redis.exceptions.RedisError: refused credentials or rights
            (``AuthenticationError``, ``NoPermissionError``...), or another error reply
        """
        with self._stops.running(self):
            self._ready = False
            # A plain asyncio task (redis.asyncio is asyncio-only): a task group would wrap
            # the loop's own exceptions in an ExceptionGroup.
            heartbeat = asyncio.ensure_future(self._heartbeat())
            try:
                await self._run_until_stopped()
                heartbeat.cancel()  # A clean stop: nothing in hand needs refreshing any more.
                # Bounded: a stop must not hang on a server that does not answer.
                with anyio.move_on_after(5.0):
                    await self._reader.leave()
            finally:
                self._held.clear()
                heartbeat.cancel()
                # Shielded: inside a cancelled anyio scope an unshielded await raises again
                # at once, and the consumer would stay "already running" for good.
                with anyio.CancelScope(shield=True):
                    await asyncio.wait([heartbeat])

    async def _run_until_stopped(self) -> None:
        """Read and handle batches; reconnect after connection errors; raise the fatal ones."""
        attempt = 0
        while not self._stops.stopping:
            try:
                await self._turn()
                attempt = 0
            except FATAL_ERRORS as exc:
                exc.add_note(
                    f"{self!r}: Redis refused this consumer: check the user and password"
                    " of the URL and the user's ACL; not retried"
                )
                raise
            except CONNECTION_ERRORS as exc:
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
                await self._stops.wait(delay)
            except redis_errors.ResponseError as exc:
                if not is_vanished_group(exc):
                    raise
                logger.warning("%r: %s; creating the consumer groups again", self, exc)
                self._ready = False

    async def _turn(self) -> None:
        """Read one batch and handle it, acknowledging as the options say."""
        if not self._ready:
            await self._reader.prepare()
            self._ready = True
        if self._unacked:
            await self._flush_acks()  # Left over by an error mid-batch.
        entries = await self._reader.next_entries(self._stops.interruptible)
        for entry in entries:
            self._held.setdefault(entry.stream, set()).add(entry.id)
        for entry in entries:
            await self._handle(entry)
            if not self.options.batch_ack:
                self._held[entry.stream].discard(entry.id)
            if self._stops.stopping:
                break
        if self._unacked:
            await self._flush_acks()
        self._held.clear()

    async def _heartbeat(self) -> None:
        """
        Keep the entries in hand from looking idle, so that no other consumer claims them.

        Entries read in one batch wait while the earlier ones run, and a receiver may run
        longer than *claim_idle*: every third of *claim_idle* their idle time is reset
        (only for those still this consumer's), so only a consumer that died, or stalled
        for longer than *claim_idle*, loses its entries to another.
        """
        while True:
            await asyncio.sleep(self.options.claim_idle / 3)
            await self._reader.touch(self._held)

    def _backoff(self, attempt: int) -> float:
        options = self.options
        return backoff(attempt, base=options.reconnect_delay, cap=options.max_reconnect_delay)

    # -- handling ------------------------------------------------------------------------

    async def _handle(self, entry: Entry) -> None:
        if entry.fields is None:
            # Trimmed from the stream while pending: nothing left to deliver.
            await self._until_done(entry.id, functools.partial(self._ack, entry))
            return
        payload = entry.field("payload")
        if payload is None:
            await self._bury_until_done(entry, "the entry has no 'payload' field")
            return
        message = StreamMessage(
            id=entry.id,
            stream=entry.stream,
            signal=self._streams[entry.stream],
            deliveries=entry.deliveries,
            key=entry.field("key"),
            group=self.transport.group,
            consumer=self.name,
        )
        max_deliveries = self.options.max_deliveries
        verdict = await dispatch(
            self._signals, message, payload, entry.field("sender") or "", max_deliveries
        )
        if verdict.failed:
            self.failed += 1
        if verdict.outcome is Outcome.ACK:
            self.handled += 1
            if self.options.batch_ack:
                self._unacked.setdefault(entry.stream, []).append(entry.id)
            else:
                await self._until_done(entry.id, functools.partial(self._ack, entry))
        elif verdict.outcome is Outcome.RETRY:
            options = self.options
            delay = redelivery_delay(entry.deliveries, options.retry_delay, options.claim_idle)
            self._reader.retry_later(entry, delay)
        else:
            await self._bury_until_done(entry, verdict.error or "")

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
            except CONNECTION_ERRORS as exc:
                attempt += 1
                if self._stops.stopping:
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
                await self._stops.wait(delay)
            else:
                return

    async def _bury_until_done(self, entry: Entry, error: str) -> None:
        await self._until_done(entry.id, functools.partial(self._bury, entry, error))

    async def _ack(self, entry: Entry) -> None:
        await self.transport.client.xack(entry.stream, self.transport.group, entry.id)

    async def _bury(self, entry: Entry, error: str) -> None:
        transport = self.transport
        fields = dead_letter_fields(entry, error, transport.group, self.name)
        async with transport.client.pipeline(transaction=True) as pipe:
            pipe.xadd(transport.dead_letter_stream, fields)
            pipe.xack(entry.stream, transport.group, entry.id)
            await pipe.execute()
        self.dead += 1
        logger.error(
            "%r: moved entry %s of %s to %s: %s",
            self,
            entry.id,
            entry.stream,
            transport.dead_letter_stream,
            error,
        )
