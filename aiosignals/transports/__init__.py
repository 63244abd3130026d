"""
Signals across processes.

:class:`RedisStreamTransport` publishes the sends of named signals to Redis Streams and
:class:`Subscriber` consumes them in other processes through a consumer group. Needs the
``redis`` extra: ``pip install "aiosignals[redis]"``.
"""

from __future__ import annotations

try:
    from redis import asyncio as _redis_asyncio
except ImportError as exc:  # pragma: no cover -- exercised in a subprocess by the tests
    raise ImportError(
        'aiosignals.transports needs redis-py: pip install "aiosignals[redis]"'
    ) from exc

from ._redis import (
    RedisStreamTransport,
    StreamMessage,
    Subscriber,
    SubscriberOptions,
    current_message,
)

del _redis_asyncio  # Imported only to check that the extra is installed.

__all__ = [
    "RedisStreamTransport",
    "StreamMessage",
    "Subscriber",
    "SubscriberOptions",
    "current_message",
]
