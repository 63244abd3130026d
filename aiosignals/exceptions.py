"""
Every public exception of aiosignals, in one module.

Validation failures are pydantic's own :class:`pydantic.ValidationError`, timeouts are the
builtin :class:`TimeoutError` and concurrent failures the builtin :class:`ExceptionGroup`,
so that code written against those keeps working.
"""

from __future__ import annotations

__all__ = [
    "AiosignalsError",
    "BufferFull",
    "NestedFlushError",
    "RecursionDepthError",
    "TransactionAborted",
    "UnsupportedByBroker",
]


class AiosignalsError(Exception):
    """
    Base class of the exceptions that aiosignals defines itself.

    .. versionadded:: 0.1
    """


class RecursionDepthError(AiosignalsError, RuntimeError):
    """
    Raised when a signal is sent from its own receivers deeper than its ``max_depth``.

    The classic case is a ``post_save`` receiver of ``Profile`` that saves the ``User``
    whose ``post_save`` receiver saves the ``Profile`` again.

    .. versionadded:: 0.1
    """


class BufferFull(AiosignalsError):  # noqa: N818 -- the name says what happened, as queue.Full does
    """
    Raised by :meth:`~aiosignals.EventBus.publish_nowait` when the bus buffer is full.

    .. versionadded:: 0.1
    """


class TransactionAborted(AiosignalsError):  # noqa: N818 -- reads as what happened
    """
    Raised when a transaction ends after one of its writes failed and the error was caught.

    A write inside an open transaction joins it (as Django's ``save()`` joins an
    ``atomic`` block); if it fails, the transaction can only roll back, so leaving the block
    normally rolls it back and raises this, with the write's error as ``__cause__``. Wrap
    a write that may fail in a nested ``transaction()`` (a savepoint) to carry on after it.

    .. versionadded:: 0.1
    """


class NestedFlushError(AiosignalsError, RuntimeError):
    """
    Raised when a model signal receiver flushes or commits the session that is sending it.

    The receivers of an instrumented session run inside its flush, where SQLAlchemy cannot
    flush again: add objects with ``session.add()`` (the same flush, or the commit's,
    writes them and sends their signals) or write through another session.

    .. versionadded:: 0.2
    """


class UnsupportedByBroker(AiosignalsError, NotImplementedError):  # noqa: N818 -- reads as what happened
    """
    Raised when a transport is asked for what its broker cannot do.

    Kafka, say, acknowledges by committing an offset: it has no per-message negative
    acknowledgement and no dead letter, so a message whose send failed cannot be
    redelivered alone or dead-lettered; the error says so instead of dropping it.

    .. versionadded:: 0.1
    """
