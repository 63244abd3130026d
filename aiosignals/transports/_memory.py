"""
An in-process transport on anyio memory object streams, with the semantics of the others.

It serialises payloads to JSON and senders to labels as a broker transport does, so a test
that runs against it catches a payload that would not travel; and it acknowledges,
redelivers and dead-letters as the protocol says, so it doubles as a test double.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import TYPE_CHECKING, Any

import anyio

from .._service import Stopper
from ._dispatch import Forwarding, Outcome, Tally, dispatch, signal_map
from ._message import StreamMessage, encode_send, require_name

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from .._signal import Signal
    from .._types import P
    from ._protocol import Signals

__all__ = ["MemoryConsumer", "MemoryTransport"]


@dataclasses.dataclass(slots=True)
class _Record:
    id: str
    payload: str
    sender: str
    key: str | None
    deliveries: int = 0  # How many times it has been handed to a consumer so far.


@dataclasses.dataclass(slots=True)
class _Queue:
    send: MemoryObjectSendStream[_Record]
    receive: MemoryObjectReceiveStream[_Record]


class _Store:
    """The queues and dead letters of one transport, shared with its consumers."""

    def __init__(self) -> None:
        self.queues: dict[tuple[str, str], _Queue] = {}
        self.dead: list[tuple[str, dict[str, str]]] = []

    def queue(self, name: str, group: str) -> _Queue:
        queue = self.queues.get((name, group))
        if queue is None:
            send, receive = anyio.create_memory_object_stream[_Record](math.inf)
            queue = self.queues[name, group] = _Queue(send, receive)
        return queue

    def bury(self, record: _Record, message: StreamMessage, error: str) -> None:
        fields = {"payload": record.payload, "sender": record.sender}
        if record.key is not None:
            fields["key"] = record.key
        fields.update(
            error=error,
            stream=message.stream,
            deliveries=str(message.deliveries),
            group=message.group,
            consumer=message.consumer,
        )
        self.dead.append((record.id, fields))


class MemoryTransport(Forwarding):
    """
    Carries the sends of named signals to consumers in the same process, through memory.

    Each group of consumers has one unbounded queue per signal; a published send goes to the
    queue of every group that has one for its signal (the transport's own *group* always
    has one, so what is published before any consumer runs waits for it). A message whose
    send fails goes to the back of its queue and is delivered again; after *max_deliveries*
    deliveries it is dead-lettered (:meth:`dead_letters`). A consumer cancelled while its
    receivers run puts the message back, as a broker does with what a dead consumer held.

    Use it in tests in place of a broker transport: the same code publishes, forwards and
    consumes, and ``transport.dead_letters()`` shows what could not be handled.
    ``with MemoryTransport() as transport:`` closes its queues on exit.

    :param group: the consumer group whose queue published sends always reach

    .. versionadded:: 0.1
    """

    forward_namespace = "aiosignals.memory"

    def __init__(self, *, group: str = "aiosignals") -> None:
        self.group: str = group
        """The default consumer group."""
        self._store = _Store()
        self._ids = itertools.count(1)

    def __repr__(self) -> str:
        return f"<MemoryTransport group={self.group!r}>"

    def __enter__(self) -> MemoryTransport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close its queues: what is still queued is dropped, and consumers stop reading."""
        for queue in self._store.queues.values():
            queue.send.close()
            queue.receive.close()
        self._store.queues.clear()

    def stream_name(self, signal: Signal[Any] | str) -> str:
        """
        Return the name the messages of *signal* travel under: its own.

        :raises ValueError: if the signal has no name
        """
        return signal if isinstance(signal, str) else require_name(signal)

    async def publish(
        self, signal: Signal[P], sender: Any, payload: P, *, key: str | None = None
    ) -> str:
        """
        Queue a send of *signal* for every group that consumes it, and return its id.

        :param key: an idempotency key, handed to receivers as :attr:`StreamMessage.key`
        :raises ValueError: if the signal has no name
        :raises pydantic.ValidationError: if *payload* does not validate
        :raises TypeError: if a value of *payload* has no JSON form
        """
        name = self.stream_name(signal)
        text, label = encode_send(signal, name, sender, payload)
        message_id = str(next(self._ids))
        self._store.queue(name, self.group)
        for (queued, _), queue in self._store.queues.items():
            if queued == name:
                queue.send.send_nowait(_Record(message_id, text, label, key))
        return message_id

    def consumer(
        self,
        signals: Signals,
        *,
        group: str | None = None,
        consumer: str = "memory",
        max_deliveries: int = 5,
    ) -> MemoryConsumer:
        """
        Return a consumer of *signals*; consumers of one group share its messages.

        :param group: its group (default: the transport's)
        :param consumer: its name, as receivers see it in :attr:`StreamMessage.consumer`
        :param max_deliveries: deliveries of a message before it is dead-lettered
        :raises ValueError: if a signal has no name, or *max_deliveries* is below 1
        """
        return MemoryConsumer(
            self,
            self._store,
            signals,
            group=self.group if group is None else group,
            name=consumer,
            max_deliveries=max_deliveries,
        )

    def pending(self, signal: Signal[Any] | str, *, group: str | None = None) -> int:
        """Return how many messages of *signal* wait in the queue of *group*."""
        queue = self._store.queues.get((self.stream_name(signal), group or self.group))
        return 0 if queue is None else queue.receive.statistics().current_buffer_used

    def dead_letters(self, count: int = 100) -> list[tuple[str, dict[str, str]]]:
        """
        Return the oldest *count* dead letters: ``(message id, fields)``.

        The fields are ``payload``, ``sender``, ``key`` (when given), ``error``, ``stream``,
        ``deliveries``, ``group`` and ``consumer``.
        """
        return self._store.dead[:count]


class MemoryConsumer(Tally):
    """
    Consumes the messages of some signals from a :class:`MemoryTransport`.

    Made by :meth:`MemoryTransport.consumer` (not directly). ``await consumer.run()`` until
    :meth:`stop` or cancellation.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        transport: MemoryTransport,
        store: _Store,
        signals: Signals,
        *,
        group: str,
        name: str,
        max_deliveries: int,
    ) -> None:
        if max_deliveries < 1:
            raise ValueError(f"max_deliveries must be at least 1, got {max_deliveries}")
        self.transport = transport
        """The transport it reads from."""
        self.group: str = group
        """Its consumer group."""
        self.name: str = name
        """Its name in the group."""
        self.max_deliveries: int = max_deliveries
        """Deliveries of a message before it is dead-lettered."""
        self._store = store
        self._signals = signal_map(signals)
        for name_ in self._signals:
            transport.stream_name(name_)
        self._stops = Stopper()

    def __repr__(self) -> str:
        return f"<MemoryConsumer {self.name!r} group={self.group!r}>"

    def stop(self) -> None:
        """Ask :meth:`run` to return after the messages in hand; waiting reads end at once."""
        self._stops.stop()

    async def run(self) -> None:
        """
        Consume until :meth:`stop` is called or the task is cancelled.

        :raises RuntimeError: if it is already running
        """
        with self._stops.running(self):
            async with anyio.create_task_group() as tasks:
                for name in self._signals:
                    tasks.start_soon(self._consume, name)

    async def _consume(self, name: str) -> None:
        queue = self._store.queue(name, self.group)
        with queue.receive.clone() as receive:
            while not self._stops.stopping:
                try:
                    done, record = await self._stops.interruptible(receive.receive)
                except anyio.EndOfStream:
                    return  # The transport was closed.
                if not done or record is None:
                    return  # stop() ended the wait.
                await self._handle(name, record, queue)

    async def _handle(self, name: str, record: _Record, queue: _Queue) -> None:
        record.deliveries += 1
        message = StreamMessage(
            id=record.id,
            stream=name,
            signal=name,
            deliveries=record.deliveries,
            key=record.key,
            group=self.group,
            consumer=self.name,
        )
        try:
            verdict = await dispatch(
                self._signals, message, record.payload, record.sender, self.max_deliveries
            )
        except BaseException:
            # Cancelled with the message in hand: back to the queue, as a broker does
            # with what a dead consumer held.
            queue.send.send_nowait(record)
            raise
        if verdict.failed:
            self.failed += 1
        if verdict.outcome is Outcome.ACK:
            self.handled += 1
        elif verdict.outcome is Outcome.RETRY:
            queue.send.send_nowait(record)
        else:
            self._store.bury(record, message, verdict.error or "")
            self.dead += 1
