"""
Signals across processes.

Every transport follows one protocol (:class:`Transport`): it publishes the sends of named
signals, and its consumers call their receivers in other processes, acknowledging each
message after its receivers ran, redelivering what failed or what a dead consumer left, and
dead-lettering after *max_deliveries*.

- :class:`MemoryTransport`: in one process, through memory; the test double.
- :class:`RedisStreamTransport`: Redis Streams consumer groups (the ``redis`` extra), read
  by :class:`RedisConsumer`; also importable from :mod:`aiosignals.transports.redis`.
- :class:`FastStreamTransport`: RabbitMQ, NATS JetStream, Redis or Kafka through a
  FastStream broker (the ``faststream`` extra).

Importing this package needs the ``redis`` extra: ``pip install "aiosignals[redis]"``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

try:
    from redis import asyncio as _redis_asyncio
except ImportError as exc:  # pragma: no cover -- exercised in a subprocess by the tests
    raise ImportError(
        'aiosignals.transports needs redis-py: pip install "aiosignals[redis]"'
    ) from exc

from ..exceptions import UnsupportedByBroker
from ._memory import MemoryConsumer, MemoryTransport
from ._message import StreamMessage, current_message
from ._protocol import Consumer, Signals, Transport
from .redis import (
    RedisConsumer,
    RedisConsumerOptions,
    RedisStreamTransport,
    SubscriberOptions,
    deprecated_name,
)

if TYPE_CHECKING:
    from ._faststream import FastStreamConsumer, FastStreamTransport, broker_from_url
    from .redis import Subscriber as Subscriber

del _redis_asyncio  # Imported only to check that the extra is installed.

__all__ = [
    "Consumer",
    "FastStreamConsumer",
    "FastStreamTransport",
    "MemoryConsumer",
    "MemoryTransport",
    "RedisConsumer",
    "RedisConsumerOptions",
    "RedisStreamTransport",
    "Signals",
    "StreamMessage",
    "SubscriberOptions",
    "Transport",
    "UnsupportedByBroker",
    "broker_from_url",
    "current_message",
]

_FASTSTREAM = ("FastStreamConsumer", "FastStreamTransport", "broker_from_url")


def __getattr__(name: str) -> Any:
    # FastStream is imported only when asked for: it is an extra of its own, and heavy.
    if name in _FASTSTREAM:
        import importlib

        return getattr(importlib.import_module(f"{__name__}._faststream"), name)
    return deprecated_name(__name__, name)
