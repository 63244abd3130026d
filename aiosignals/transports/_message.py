"""
What every transport shares: the message a receiver sees, and how senders travel.

Each transport calls the receivers of a message it consumes inside :func:`delivering`, so
that :func:`current_message` gives them the message, whichever transport read it.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Generator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from .._delivery import current_delivery

if TYPE_CHECKING:
    from .._signal import Signal

__all__ = [
    "StreamMessage",
    "current_message",
    "delivering",
    "outbox_key",
    "require_name",
    "resolve_sender",
    "sender_label",
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


def sender_label(sender: Any) -> str:
    """
    Return how *sender* travels: ``module:qualname`` for a class, ``""`` for ``None``, else ``str``.

    :param sender: the sender of a send
    """
    if sender is None:
        return ""
    if isinstance(sender, type):
        return f"{sender.__module__}:{sender.__qualname__}"
    return str(sender)


def resolve_sender(label: str) -> Any:
    """
    Return the sender a consumer passes on for *label*.

    A ``module:qualname`` label whose module is already imported in this process and names a
    class gives that class back, so receivers connected for ``sender=ThatClass`` receive it.
    Modules are never imported on behalf of a message. ``""`` gives ``None``; anything else
    stays the string.
    """
    if not label:
        return None
    module_name, colon, qualname = label.partition(":")
    module = sys.modules.get(module_name) if colon else None
    if module is None:
        return label
    value: Any = module
    for part in qualname.split("."):
        value = getattr(value, part, None)
        if value is None:
            return label
    return value if isinstance(value, type) else label


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


def outbox_key() -> str | None:
    """Return ``outbox:<database>:<row id>`` when the outbox relay is calling us, else ``None``."""
    delivery = current_delivery()
    return None if delivery is None else delivery.key
