"""
The transport protocol: what every way of sending signals across processes offers.

A transport publishes the sends of named signals and makes consumers that call their
receivers in other processes. Every implementation (:class:`MemoryTransport`,
:class:`RedisStreamTransport`, :class:`FastStreamTransport`) keeps the same promises:

- a message is acknowledged only after its receivers ran, so delivery is at least once;
- a message whose send failed is delivered again, at most *max_deliveries* times, then
  dead-lettered with the error; so is one whose consumers kept dying while handling it;
- what a consumer that died left in hand is delivered to another consumer of its group;
- receivers see the message through :func:`current_message`, with an idempotency key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from .._service import Service
from .._signal import Signal

if TYPE_CHECKING:
    from .._types import P

__all__ = ["Consumer", "Signals", "Transport"]


Signals: TypeAlias = Iterable[Signal[Any] | str] | Mapping[str, Signal[Any]] | Signal[Any]
"""The signals a consumer reads: signals, their names, a name-to-signal mapping, or one."""


class Consumer(Service, Protocol):
    """
    Consumes the messages of some signals and sends each to its signal's receivers.

    A :class:`~aiosignals.Service`: the web integrations run it with the app.

    .. versionadded:: 0.1
    """

    handled: int
    """Messages whose send succeeded (and that are acknowledged, or about to be)."""
    failed: int
    """Sends that raised (each failed delivery counts)."""
    dead: int
    """Messages it dead-lettered."""

    async def run(self) -> None:
        """Consume until :meth:`stop` is called or the task is cancelled."""
        ...

    def stop(self) -> None:
        """Ask :meth:`run` to return after the message in hand."""
        ...


class Transport(Protocol):
    """
    Publishes the sends of named signals, and makes the consumers that receive them.

    .. versionadded:: 0.1
    """

    async def publish(
        self, signal: Signal[P], sender: Any, payload: P, *, key: str | None = None
    ) -> str:
        """
        Publish a send of *signal* and return the message id.

        :param key: an idempotency key, handed to receivers as :attr:`StreamMessage.key`
        :raises ValueError: if the signal has no name
        """
        ...

    def forward(
        self, signal: Signal[P], *, sender: Any = ...
    ) -> Callable[[Any, P], Awaitable[None]]:
        """Publish every send of *signal* through the durable outbox, and return the receiver."""
        ...

    def unforward(self, signal: Signal[Any]) -> bool:
        """Stop publishing the sends of *signal*; return whether it was forwarded."""
        ...

    def consumer(self, signals: Signals, *, max_deliveries: int = ...) -> Consumer:
        """Return a consumer of *signals*: each message goes to one consumer of its group."""
        ...
