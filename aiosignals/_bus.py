"""
Background dispatch: an :class:`EventBus` that delivers sends from worker tasks.

``publish`` hands an event to a bounded buffer and returns; worker tasks of the bus's own
task group take events out in order and call ``signal.send(sender, payload)``. Leaving the
``async with`` block stops intake and drains the buffer within a deadline; whatever could
not be delivered is logged and kept in :attr:`EventBus.undelivered`, never dropped silently.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from contextvars import ContextVar
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple, Self

import anyio

from ._options import check_count
from ._signal import Signal
from .exceptions import BufferFull

if TYPE_CHECKING:
    from anyio.abc import TaskGroup
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from ._event import Event
    from ._types import P

__all__ = ["EventBus"]

logger = logging.getLogger("aiosignals")

_NEW, _RUNNING, _CLOSED = "new", "running", "closed"

# The bus whose worker runs the current task (and the tasks its sends start): a publish to
# that bus comes from one of its own receivers, a follow-up event.
_worker_of: ContextVar[EventBus | None] = ContextVar("aiosignals_bus_worker", default=None)


class _Queued(NamedTuple):
    """One published event; a plain ``(signal, sender, payload)`` tuple to users."""

    signal: Signal[Any]
    sender: Any
    payload: Event


class EventBus:
    """
    Deliver signals in the background, from worker tasks of the bus's own task group.

    ::

        async with EventBus(max_buffer=1000, workers=4) as bus:
            await bus.publish(user_registered, AccountService, UserRegistered(...))

    Each event is delivered by ``await signal.send(sender, payload)`` with the signal's own
    mode, error policy and timeout. A send that raises is logged on the ``aiosignals``
    logger with its signal and sender and counted in :attr:`failed`; the worker goes on
    with the next event; so is a send that raises the cancellation exception although the
    bus was not cancelled (a receiver raising it itself). With ``workers=1`` events are
    delivered one at a time in the order they were published; with more, up to *workers*
    sends run at once.

    Publish from the event loop thread the bus runs in. From another thread (or another
    event loop) ``publish`` raises :class:`RuntimeError`: call it through
    ``anyio.from_thread.run(bus.publish, signal, sender, payload)``.

    Sends run in the context of the bus, not of the publisher: outside any transaction the
    publisher may have open (so ``AFTER_COMMIT`` receivers run at once, and an event
    published inside a transaction that later rolls back is still delivered: publish from
    an ``AFTER_COMMIT`` receiver to deliver only committed facts), and without the
    publisher's task-scoped :meth:`~aiosignals.Signal.muted` or
    :meth:`~aiosignals.Signal.connected_to`.

    Leaving the block stops intake (publishers still waiting for room get a
    :class:`RuntimeError`) and waits up to *drain_timeout* seconds for the workers to
    deliver what is queued. Sends still running then are cancelled; they and the events
    still queued are logged as a warning and kept in :attr:`undelivered`. When the body
    raises an exception the bus drains the same way, then the exception propagates
    unchanged. When the block is cancelled (or interrupted by a ``BaseException`` such as
    :class:`KeyboardInterrupt`) the workers are cancelled at once, without draining, and
    what was left is reported in :attr:`undelivered`.

    A receiver run by the bus may publish follow-up events to it. Such a publish (from one
    of the bus's worker tasks, or a task a send started there) never waits for room: with
    the buffer full, waiting would deadlock a bus whose workers are all publishing. The
    event is accepted over *max_buffer* into an unbounded overflow queue, and the workers
    take follow-ups before the events in the buffer: each follow-up waits only for those
    published before it, and a chain of follow-ups is delivered before new events from
    outside. Follow-ups are also accepted while the bus drains: they join the drain, within
    the same *drain_timeout*, and what is not delivered by then is in :attr:`undelivered`.
    A publish from outside the bus after the block was left raises :class:`RuntimeError`.

    A bus is used once: it cannot be entered again after it has closed.

    :param max_buffer: how many published events may wait for a worker; :meth:`publish`
        waits and :meth:`publish_nowait` raises :class:`~aiosignals.BufferFull` beyond it
    :param workers: how many events are delivered at once
    :param drain_timeout: seconds the exit of the block waits for queued events to be
        delivered (``math.inf`` waits as long as it takes)
    :raises TypeError: if *max_buffer* or *workers* is not an int
    :raises ValueError: if *max_buffer* or *workers* is below 1, or *drain_timeout* is
        negative

    .. versionadded:: 0.1
    """

    def __init__(
        self, *, max_buffer: int = 1000, workers: int = 1, drain_timeout: float = 10.0
    ) -> None:
        check_count(max_buffer, what="max_buffer")
        check_count(workers, what="workers")
        # No upper bound: an infinite drain_timeout waits for the queue however long it takes.
        if isinstance(drain_timeout, bool) or not isinstance(drain_timeout, int | float):  # pyright: ignore[reportUnnecessaryIsInstance] -- often from untyped config
            raise TypeError(f"drain_timeout must be a number of seconds, got {drain_timeout!r}")
        if math.isnan(drain_timeout) or drain_timeout < 0:
            raise ValueError(f"drain_timeout must be a number of seconds >= 0, got {drain_timeout}")
        self.max_buffer: int = max_buffer
        """How many published events may wait for a worker."""
        self.workers: int = workers
        """How many events are delivered at once."""
        self.drain_timeout: float = drain_timeout
        """Seconds the exit of the block waits for queued events to be delivered."""
        self.delivered: int = 0
        """How many events were sent without the send raising."""
        self.failed: int = 0
        """How many sends raised (each was logged)."""
        self.undelivered: list[tuple[Signal[Any], Any, Event]] = []
        """
        ``(signal, sender, payload)`` of each event accepted but not delivered when the bus
        closed: the events still running first, then those still queued, in order.
        """
        self._state = _NEW
        self._group: TaskGroup | None = None
        self._send_stream: MemoryObjectSendStream[_Queued] | None = None
        self._receive_stream: MemoryObjectReceiveStream[_Queued] | None = None
        # Made on entry: anyio's primitives need a running event loop, and a bus is often
        # built before there is one (at import time, in an app factory).
        self._worker_scope: anyio.CancelScope | None = None
        self._workers_done: anyio.Event | None = None
        # The event each worker is sending, so that a send cut off by the drain deadline
        # or a cancellation is reported with the events still queued.
        self._in_flight: list[_Queued | None] = [None] * workers
        # Follow-up events published by the bus's own receivers, taken before the buffer.
        self._overflow: deque[_Queued] = deque()
        # Set once what was left has been reported: nothing can be accepted any more.
        self._finished = False
        # The thread of the event loop the bus runs in: a publish from any other thread
        # would not wake its workers.
        self._thread: int | None = None

    def __repr__(self) -> str:
        return (
            f"<EventBus {self._state} pending={self.pending} delivered={self.delivered}"
            f" failed={self.failed} workers={self.workers} max_buffer={self.max_buffer}>"
        )

    @property
    def pending(self) -> int:
        """How many published events are waiting for a worker (follow-ups included)."""
        if self._receive_stream is None:
            return len(self._overflow)
        return self._receive_stream.statistics().current_buffer_used + len(self._overflow)

    @property
    def running(self) -> bool:
        """Whether the bus accepts events: inside its ``async with`` block."""
        return self._state == _RUNNING

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state != _NEW:
            raise RuntimeError(f"{self!r} has already been used; create a new EventBus")
        send_stream, receive_stream = anyio.create_memory_object_stream[_Queued](self.max_buffer)
        self._worker_scope = anyio.CancelScope()
        self._workers_done = anyio.Event()
        self._thread = threading.get_ident()
        group = anyio.create_task_group()
        await group.__aenter__()
        self._send_stream, self._receive_stream, self._group = send_stream, receive_stream, group
        group.start_soon(self._supervise, name=f"aiosignals EventBus {id(self):#x}")
        self._state = _RUNNING
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._group is not None
        assert self._send_stream is not None
        assert self._worker_scope is not None
        assert self._workers_done is not None
        self._state = _CLOSED
        # Stops intake: publishers waiting for room are withdrawn (and told so), and the
        # workers end once the buffer is empty.
        self._send_stream.close()
        reason = "the bus was cancelled"
        try:
            if exc is None or isinstance(exc, Exception):
                with anyio.move_on_after(self.drain_timeout) as deadline:
                    await self._workers_done.wait()
                if deadline.cancelled_caught:
                    reason = f"drain_timeout={self.drain_timeout}s ran out"
        finally:
            # Past the deadline, or cancelled: sends still running are cut off.
            self._worker_scope.cancel()
            try:
                await self._group.__aexit__(None, None, None)
            finally:
                self._collect_undelivered(reason)

    async def _supervise(self) -> None:
        # The workers live in their own cancel scope, so that the drain deadline can stop
        # them without cancelling the task that owns the block.
        assert self._worker_scope is not None
        assert self._workers_done is not None
        try:
            with self._worker_scope:
                async with anyio.create_task_group() as workers:
                    for index in range(self.workers):
                        workers.start_soon(self._work, index)
        finally:
            self._workers_done.set()

    async def _work(self, index: int) -> None:
        assert self._receive_stream is not None
        _worker_of.set(self)
        receive = self._receive_stream.receive
        overflow = self._overflow
        cancelled = anyio.get_cancelled_exc_class()
        while True:
            if overflow:
                event = overflow.popleft()
            else:
                try:
                    event = await receive()
                except anyio.EndOfStream:
                    # Intake has closed and the buffer is empty; a follow-up published by
                    # another worker's receiver is taken by that worker, still running.
                    if overflow:
                        continue
                    return
            self._in_flight[index] = event
            try:
                await event.signal.send(event.sender, event.payload)
            except cancelled:
                if anyio.current_effective_deadline() == -math.inf:
                    raise  # The bus is cancelled (or its drain deadline ran out).
                # Raised by a receiver itself: a failed delivery, not the end of the worker.
                self._failed(event)
            except Exception:  # noqa: BLE001 -- logged with its traceback by _failed
                self._failed(event)
            else:
                self.delivered += 1
            # Not reached when the send is cancelled: the event stays in flight, reported.
            self._in_flight[index] = None

    def _failed(self, event: _Queued) -> None:
        self.failed += 1
        logger.exception(
            "EventBus: delivery of %r from sender %r failed", event.signal, event.sender
        )

    def _collect_undelivered(self, reason: str) -> None:
        assert self._receive_stream is not None
        left = [event for event in self._in_flight if event is not None]
        left.extend(self._overflow)
        self._overflow.clear()
        self._finished = True
        receive = self._receive_stream
        while True:
            try:
                left.append(receive.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream):
                break
        receive.close()
        if left:
            self.undelivered.extend(left)
            logger.warning(
                "EventBus: %d event(s) not delivered because %s; see EventBus.undelivered"
                " (first: %r from sender %r)",
                len(left),
                reason,
                left[0].signal,
                left[0].sender,
            )

    # -- publishing ----------------------------------------------------------------------

    def _check(self, signal: Signal[P], sender: Any, payload: P) -> _Queued:
        if self._thread is not None and threading.get_ident() != self._thread:
            raise RuntimeError(
                f"cannot publish to {signal!r} from another thread or event loop than the"
                " EventBus runs in: its workers would not wake up. Call it through"
                " anyio.from_thread.run(bus.publish, signal, sender, payload) (or"
                " anyio.from_thread.run_sync(bus.publish_nowait, ...))"
            )
        if self._state != _RUNNING and not (self._from_worker() and self._state == _CLOSED):
            where = "has closed" if self._state == _CLOSED else "has not been started"
            raise RuntimeError(
                f"cannot publish to {signal!r}: the EventBus {where}; publish inside"
                " `async with EventBus() as bus:`"
            )
        if not isinstance(signal, Signal):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(f"publish() needs a Signal, got {signal!r}")
        # Raises pydantic's ValidationError here, in the publisher, rather than later in a
        # worker where nobody would see it.
        payload = signal.validate(payload)
        return _Queued(signal, sender, payload)

    def _from_worker(self) -> bool:
        return _worker_of.get() is self and not self._finished

    def _accept_follow_up(self, event: _Queued) -> None:
        # A worker waiting for room could wait for itself: accepted at once, over the limit.
        assert self._send_stream is not None
        if (
            not self._overflow
            and self._state == _RUNNING
            and self._send_stream.statistics().tasks_waiting_receive
        ):
            # An idle worker takes it now; the buffer is empty, so nothing is overtaken.
            self._send_stream.send_nowait(event)
        else:
            self._overflow.append(event)

    async def publish(self, signal: Signal[P], sender: Any, payload: P) -> None:
        """
        Queue ``signal.send(sender, payload)`` for delivery, waiting while the buffer is full.

        :param signal: the signal to send
        :param sender: the sender to send it from
        :param payload: an instance of the signal's payload type
        :raises RuntimeError: outside the bus's ``async with`` block, from another thread
            or event loop (use ``anyio.from_thread.run``), or when the bus
            closes while this call waits for room (the event was then not accepted); a
            receiver run by the bus never waits and is refused only once the bus has
            reported what it left undelivered
        :raises pydantic.ValidationError: if *payload* is not of the signal's payload type
        """
        event = self._check(signal, sender, payload)
        assert self._send_stream is not None
        if self._from_worker():
            self._accept_follow_up(event)
            return
        try:
            await self._send_stream.send(event)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise RuntimeError(
                f"cannot publish to {signal!r}: the EventBus closed while this publish"
                " waited for room in its buffer; the event was not accepted"
            ) from None

    def publish_nowait(self, signal: Signal[P], sender: Any, payload: P) -> None:
        """
        Queue ``signal.send(sender, payload)`` for delivery if the buffer has room.

        :param signal: the signal to send
        :param sender: the sender to send it from
        :param payload: an instance of the signal's payload type
        :raises ~aiosignals.BufferFull: if *max_buffer* events are already waiting; the
            event was not accepted (never for a receiver run by the bus: its follow-ups
            are accepted over the limit)
        :raises RuntimeError: outside the bus's ``async with`` block, or from another
            thread or event loop (use ``anyio.from_thread.run_sync``)
        :raises pydantic.ValidationError: if *payload* is not of the signal's payload type
        """
        event = self._check(signal, sender, payload)
        assert self._send_stream is not None
        if self._from_worker():
            self._accept_follow_up(event)
            return
        try:
            self._send_stream.send_nowait(event)
        except anyio.WouldBlock:
            raise BufferFull(
                f"the EventBus buffer is full ({self.max_buffer} events waiting);"
                f" the event for {signal!r} was not accepted: retry, use `await publish()`"
                " to wait for room, or raise max_buffer"
            ) from None
