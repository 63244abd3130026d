"""
Typed, asyncio-native signals with Django ``post_save`` semantics.

``await signal.send(sender, payload)`` with pydantic payloads, sequential or concurrent
receivers with priorities, timeouts and error policies, transaction phases, a durable
outbox and a Redis Streams transport. Runs on asyncio and trio through anyio.
"""

from __future__ import annotations

from ._bus import EventBus
from ._event import Event
from ._options import ANY, Concurrent, Mode, Phase, Sequential
from ._records import Connection
from ._service import Service
from ._signal import Signal, receiver
from ._tracing import instrument, uninstrument
from ._types import ErrorPolicy, Receiver
from .exceptions import AiosignalsError, BufferFull, RecursionDepthError, TransactionAborted

__all__ = [
    "ANY",
    "AiosignalsError",
    "BufferFull",
    "Concurrent",
    "Connection",
    "ErrorPolicy",
    "Event",
    "EventBus",
    "Mode",
    "Phase",
    "Receiver",
    "RecursionDepthError",
    "Sequential",
    "Service",
    "Signal",
    "TransactionAborted",
    "instrument",
    "receiver",
    "uninstrument",
]
