"""
What every transport shares: the message a receiver sees, and how a send is encoded.

Each transport calls the receivers of a message it consumes inside :func:`delivering`, so
that :func:`current_message` gives them the message, whichever transport read it. Each
publishes a send as :func:`encode_send` makes it (the payload's JSON and the sender's label
of :mod:`aiosignals.models`) to the stream :func:`prefixed_stream` names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from .._delivery import current_delivery
from ..models import dump_payload, sender_label

if TYPE_CHECKING:
    from .._signal import Signal
    from .._types import P

__all__ = [
    "StreamMessage",
    "current_message",
    "delivering",
    "encode_send",
    "outbox_key",
    "prefixed_stream",
    "require_name",
]


@dataclasses.dataclass(frozen=True, slots=True)
class StreamMessage:
    """
    The message whose receivers are running, as :func:`current_message` returns it.

    .. versionadded:: 0.1
    """

    id: str
    """Its id: the entry id Redis gave it, or the id the publisher gave it on other brokers."""
    stream: str
    """Where it was read from: the Redis stream, RabbitMQ queue, NATS subject or topic."""
    signal: str
    """The name of its signal."""
    deliveries: int
    """How many times it has been delivered to a consumer of the group; 1 the first time."""
    key: str | None
    """The idempotency key its publisher gave, or ``None``."""
    group: str
    """The consumer group reading it."""
    consumer: str
    """The consumer handling it."""

    @property
    def idempotency_key(self) -> str:
        """
        The key a receiver de-duplicates by: the publisher's key, else stream and message id.

        The publisher's key (``outbox:<database>:<row id>`` when the outbox relay forwards)
        stays the same when one send is published twice; the message id stays the same when
        one message is delivered twice.
        """
        return self.key if self.key is not None else f"{self.stream}/{self.id}"


# Module level, as the contextvars documentation asks: one variable for every transport.
_current: ContextVar[StreamMessage | None] = ContextVar("aiosignals_message", default=None)


def current_message() -> StreamMessage | None:
    """
    Return the message being dispatched to the calling receiver, or ``None``.

    Inside a receiver called by a transport's consumer this gives the message id, the
    delivery count and the publisher's idempotency key, so that the receiver can be
    idempotent: delivery is at least once. Anywhere else it returns ``None``.

    .. versionadded:: 0.1
    """
    return _current.get()


@contextmanager
def delivering(message: StreamMessage) -> Generator[None]:
    """Make *message* the :func:`current_message` of the block (for a consumer's send)."""
    token = _current.set(message)
    try:
        yield
    finally:
        _current.reset(token)


def require_name(signal: Signal[Any]) -> str:
    """
    Return the name of *signal*, which a send needs to travel.

    :raises ValueError: if it has none
    """
    if signal.name is None:
        raise ValueError(
            f"{signal!r} has no name: create it with Signal(..., name='...') to send it across"
            " processes; the name is its stream and how consumers find it"
        )
    return signal.name


def prefixed_stream(prefix: str, signal: Signal[Any] | str, dead_letter_stream: str) -> str:
    """
    Return ``{prefix}{name}``, where the messages of *signal* (or of the signal named so) go.

    :raises ValueError: if the signal has no name, or its stream is *dead_letter_stream*
    """
    name = signal if isinstance(signal, str) else require_name(signal)
    stream = f"{prefix}{name}"
    if stream == dead_letter_stream:
        raise ValueError(f"{stream!r} is the dead-letter stream: rename signal {name!r}")
    return stream


def encode_send(signal: Signal[P], stream: str, sender: Any, payload: P) -> tuple[str, str]:
    """
    Return the payload JSON and the sender label a send of *signal* travels as to *stream*.

    :param payload: an instance of the signal's payload type; anything else is validated
        into it, as :meth:`Signal.send <aiosignals.Signal.send>` does
    :raises pydantic.ValidationError: if *payload* does not validate
    :raises TypeError: if a value of *payload* has no JSON form
    """
    payload = signal.validate(payload)
    try:
        text = dump_payload(payload)
    except TypeError as exc:
        raise TypeError(
            f"cannot publish the payload of signal {signal.name!r} to the stream {stream!r}: {exc}"
        ) from exc
    return text, sender_label(sender)


def outbox_key() -> str | None:
    """Return ``outbox:<database>:<row id>`` when the outbox relay is calling us, else ``None``."""
    delivery = current_delivery()
    return None if delivery is None else delivery.key
