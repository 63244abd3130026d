"""Type variables and aliases shared by the public API; no runtime behaviour lives here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypeVar

if TYPE_CHECKING:
    from ._event import Event
    from ._records import ReceiverRecord
    from ._signal import Signal

P = TypeVar("P", bound="Event")
"""The payload type of a signal: an :class:`~aiosignals.Event` subclass."""

R = TypeVar("R")
"""What a receiver returns."""

M = TypeVar("M")
"""An entity (model) type handled by a repository."""

ErrorPolicy: TypeAlias = Literal["raise", "collect", "log"]
"""How a send treats a receiver that raises: see :class:`~aiosignals.Signal`."""

Ordering: TypeAlias = Literal["key", "receiver"]
"""
The order a durable receiver's outbox rows keep: per ordering key (``"key"``: rows of
different entities run side by side) or all of the receiver's rows in one (``"receiver"``).
"""

Receiver: TypeAlias = Callable[[Any, P], Any]
"""A callable taking ``(sender, payload)``; a coroutine function or a plain one."""

DurableSink: TypeAlias = Callable[["Signal[Any]", "ReceiverRecord", Any, "Event"], Awaitable[None]]
"""Writes one outbox row for a durable receiver in the transaction of a phase scope."""
