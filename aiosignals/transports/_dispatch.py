"""
What a consumer does with one message, whatever carried it: resolve, validate, send, judge.

:func:`dispatch` returns a :class:`Verdict`; the consumer acknowledges, redelivers or
dead-letters the message accordingly, in its broker's terms. :func:`connect_forward` is the
durable receiver that ``transport.forward(signal)`` connects.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Self, cast

from .._options import ANY
from .._signal import Signal, registry
from ..models import describe_invalid, load_payload, resolve_sender
from ._message import (
    StreamMessage,
    current_message,
    delivering,
    outbox_key,
    require_name,
)

if TYPE_CHECKING:
    from types import TracebackType

    from .._types import P
    from ._protocol import Signals

__all__ = [
    "AsyncClosing",
    "Forwarding",
    "Outcome",
    "Tally",
    "Verdict",
    "connect_forward",
    "dispatch",
    "redelivery_delay",
    "signal_map",
]

logger = logging.getLogger("aiosignals.transports")


class Outcome(enum.Enum):
    """What becomes of a message after :func:`dispatch`."""

    ACK = "ack"
    RETRY = "retry"
    DEAD = "dead"


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of one delivery, and the error that led to it (``None`` on success)."""

    outcome: Outcome
    error: str | None = None
    failed: bool = False
    """Whether the send raised or found no signal: what a consumer's ``failed`` counts."""


def redelivery_delay(deliveries: int, retry_delay: float, cap: float) -> float:
    """Return the seconds before a failed message is delivered again: doubling, at most *cap*."""
    return min(cap, retry_delay * 2.0 ** min(deliveries - 1, 60))


def signal_map(signals: Signals) -> dict[str, Signal[Any] | None]:
    """
    Return name -> signal for what a consumer reads (``None``: resolved through the registry).

    :raises ValueError: if a signal has no name, or there is none
    """
    found: dict[str, Signal[Any] | None] = {}
    if isinstance(signals, Signal):
        signals = [signals]
    if isinstance(signals, Mapping):
        found.update(cast("Mapping[str, Signal[Any]]", signals))
    else:
        for item in signals:
            if isinstance(item, str):
                found.setdefault(item, None)
            else:
                found[require_name(item)] = item
    if not found:
        raise ValueError("a consumer needs at least one signal to consume")
    return found


async def dispatch(
    signals: Mapping[str, Signal[Any] | None],
    message: StreamMessage,
    payload: str | None,
    sender: str,
    max_deliveries: int,
) -> Verdict:
    """
    Send *payload* to the receivers of the signal named by *message*, and judge the outcome.

    - Delivered more than *max_deliveries* times: dead, without running (its consumers kept
      dying while handling it; it may be what kills them).
    - No payload, or one that does not validate: dead, since retrying cannot help.
    - No signal of that name in this process, or a send that raises: retried, and dead once
      it has been delivered *max_deliveries* times, with "(after N deliveries)" added to the
      error.
    """
    if message.deliveries > max_deliveries:
        return Verdict(
            Outcome.DEAD,
            f"delivered {message.deliveries} times (max_deliveries={max_deliveries}) without"
            " being acknowledged: its consumers stopped while handling it",
        )
    if payload is None:
        return Verdict(Outcome.DEAD, "the message has no payload")
    signal = signals.get(message.signal)
    if signal is None:
        signal = registry.get(message.signal)
    if signal is None:
        error = f"no signal named {message.signal!r} in this process"
        return _failed(message, error, None, max_deliveries)
    who = resolve_sender(sender)
    try:
        event = load_payload(signal.payload_type, who, payload)
    except ValueError as exc:
        return Verdict(Outcome.DEAD, describe_invalid(signal.payload_type, exc))
    try:
        with delivering(message):
            await signal.send(who, event)
    except Exception as exc:  # noqa: BLE001 -- any failure is retried, then dead-lettered
        return _failed(message, f"{type(exc).__name__}: {exc}", exc, max_deliveries)
    return Verdict(Outcome.ACK)


def _failed(
    message: StreamMessage, error: str, exc: Exception | None, max_deliveries: int
) -> Verdict:
    logger.warning(
        "%s: message %s failed on delivery %d: %s",
        message.consumer,
        message.id,
        message.deliveries,
        error,
        exc_info=exc,
    )
    if message.deliveries >= max_deliveries:
        return Verdict(Outcome.DEAD, f"{error} (after {message.deliveries} deliveries)", True)
    return Verdict(Outcome.RETRY, error, True)


def connect_forward(
    signal: Signal[P],
    *,
    sender: Any,
    uid: str,
    stream: str,
    publish: Callable[[Signal[P], Any, P, str | None], Awaitable[object]],
) -> Callable[[Any, P], Awaitable[None]]:
    """
    Connect the durable receiver that publishes each send of *signal*, and return it.

    The outbox relay calls it after commit with its delivery id, which becomes the message's
    idempotency key. A send dispatched by a consumer reading *stream* is not published again,
    so a process may both forward and consume a signal without looping.
    """

    async def publish_send(who: Any, payload: P) -> None:
        message = current_message()
        if message is not None and message.stream == stream:
            return  # Read from this very stream: publishing it again would loop forever.
        await publish(signal, who, payload, outbox_key())

    publish_send.__qualname__ = f"forward[{signal.name}]"
    signal.connect(publish_send, sender=sender, weak=False, durable=True, dispatch_uid=uid)
    return publish_send


class Forwarding:
    """
    ``forward`` / ``unforward`` / ``forward_uid``, written once for every transport.

    A transport names its uids by :attr:`forward_namespace` and brings its own
    ``stream_name`` and ``publish``; the receiver is :func:`connect_forward`'s.
    """

    forward_namespace: str = "aiosignals"
    """The first part of :meth:`forward_uid`, naming the transport."""

    def stream_name(self, signal: Signal[Any] | str) -> str:
        """Return where the messages of *signal* go."""
        raise NotImplementedError

    async def publish(
        self, signal: Signal[P], sender: Any, payload: P, *, key: str | None = None
    ) -> str:
        """Publish a send of *signal* and return its message id."""
        raise NotImplementedError

    def forward_uid(self, signal: Signal[Any]) -> str:
        """Return the ``dispatch_uid`` of the receiver :meth:`forward` connects to *signal*."""
        return f"{self.forward_namespace}:{require_name(signal)}"

    def forward(
        self, signal: Signal[P], *, sender: Any = ANY
    ) -> Callable[[Any, P], Awaitable[None]]:
        """
        Publish every send of *signal* (from *sender*), and return the receiver.

        The receiver is connected with ``durable=True`` and ``dispatch_uid`` from
        :meth:`forward_uid`. Inside a transaction with the durable outbox, the send is
        written to the outbox with the entity and the outbox relay publishes it after commit,
        at least once, with ``outbox:<database name>:<row id>`` (the relay's
        :attr:`Delivery.key <aiosignals.outbox.Delivery.key>`) as the message's idempotency
        key, the same when the relay publishes a row twice; outside a transaction it is
        published during the send. Sends a consumer reading this very stream dispatched are
        not published again, so a process may both forward and consume a signal. Forwarding
        a signal already forwarded does nothing; undo it with :meth:`unforward`.

        :param signal: a named signal
        :param sender: forward only the sends of this sender (default: all)
        :raises ValueError: if the signal has no name
        """
        return connect_forward(
            signal,
            sender=sender,
            uid=self.forward_uid(signal),
            stream=self.stream_name(signal),
            publish=self._publish_keyed,
        )

    async def _publish_keyed(
        self, signal: Signal[P], sender: Any, payload: P, key: str | None
    ) -> None:
        await self.publish(signal, sender, payload, key=key)

    def unforward(self, signal: Signal[Any]) -> bool:
        """
        Stop publishing the sends of *signal*.

        :return: whether it was forwarded
        """
        return signal.disconnect(dispatch_uid=self.forward_uid(signal))


class Tally:
    """The counts every consumer keeps (:class:`~aiosignals.transports.Consumer`), from 0."""

    handled: int = 0
    """Messages whose send succeeded (and that are acknowledged, or about to be)."""
    failed: int = 0
    """Sends that raised or found no signal (each failed delivery counts)."""
    dead: int = 0
    """Messages it dead-lettered."""


class AsyncClosing:
    """``async with transport:`` written once: returns the transport, and closes it on exit."""

    async def aclose(self) -> None:
        """Release what the transport holds."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
