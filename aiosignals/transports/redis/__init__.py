"""
Signals across processes over Redis Streams (the ``redis`` extra).

Each named signal has one stream, ``{stream_prefix}{signal.name}``. An entry holds the payload
as pydantic JSON, a label of the sender and, when the publisher has one, an idempotency key.
Consumers read through a consumer group, so each entry goes to one consumer of the group; it
is acknowledged only once its receivers ran, and a consumer that dies leaves its entries
pending until another one claims them.

- :class:`RedisStreamTransport` publishes (``_publisher``) and makes consumers;
- :class:`RedisConsumer` runs the read loop, handles, acknowledges and dead-letters
  (``_consumer``); what it reads next and the pending entries list are ``_pending``'s;
- :class:`RedisConsumerOptions` holds its options and their defaults, once (``_options``);
- the entry fields are ``_wire``'s, the Lua scripts ``_scripts``', the errors ``_errors``'.

Everything here is also exported by :mod:`aiosignals.transports`.

.. versionadded:: 0.2
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from .._message import StreamMessage, current_message
from ._consumer import RedisConsumer

# What run() raises without retrying: the CLI reports it without a traceback.
from ._errors import FATAL_ERRORS as FATAL_ERRORS
from ._options import RedisConsumerOptions, SubscriberOptions
from ._publisher import RedisStreamTransport

if TYPE_CHECKING:
    Subscriber = RedisConsumer
    """Deprecated alias of :class:`RedisConsumer`."""

__all__ = [
    "RedisConsumer",
    "RedisConsumerOptions",
    "RedisStreamTransport",
    "StreamMessage",
    "SubscriberOptions",
    "current_message",
]


def deprecated_name(module: str, name: str) -> Any:
    """
    Return what the deprecated *name* of *module* stands for, with a ``DeprecationWarning``.

    :raises AttributeError: if *name* is not a deprecated name
    """
    if name == "Subscriber":
        warnings.warn(
            "Subscriber is renamed RedisConsumer; the old name will be removed in 1.0",
            DeprecationWarning,
            stacklevel=3,
        )
        return RedisConsumer
    raise AttributeError(f"module {module!r} has no attribute {name!r}")


def __getattr__(name: str) -> Any:
    return deprecated_name(__name__, name)
