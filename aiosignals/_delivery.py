"""
The delivery a durable receiver is being called for, seen through :func:`current_delivery`.

In the core (no optional import) so that transports can read the idempotency key of the
outbox row they forward without needing the ``sqlalchemy`` extra;
:mod:`aiosignals.outbox` re-exports both names.
"""

from __future__ import annotations

from collections.abc import Generator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

__all__ = ["Delivery", "current_delivery", "delivering"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """
    The outbox row a durable receiver is being called for.

    .. versionadded:: 0.1
    """

    id: int
    """
    The row id: the same on every redelivery and never reused by the database, so a
    receiver can de-duplicate by it.
    """

    attempt: int
    """1 on the first try, 2 on the first retry, and so on."""

    dispatch_uid: str
    """The receiver's ``dispatch_uid``."""

    database: str = "default"
    """The ``name`` of the :class:`~aiosignals.repository.sqlalchemy.Database` of the row."""

    @property
    def key(self) -> str:
        """
        ``outbox:<database>:<id>``: an idempotency key to hand to another system.

        Row ids are unique within one database only; the key also names the database, so
        the rows of two databases (given different ``name`` s) never share a key.

        .. versionadded:: 0.1
        """
        return f"outbox:{self.database}:{self.id}"


_delivery: ContextVar[Delivery | None] = ContextVar("aiosignals_delivery", default=None)


def current_delivery() -> Delivery | None:
    """
    Return the outbox delivery of the durable receiver running now, or ``None``.

    .. versionadded:: 0.1
    """
    return _delivery.get()


@contextmanager
def delivering(delivery: Delivery) -> Generator[None]:
    """Make *delivery* the :func:`current_delivery` of the code run inside the block."""
    token = _delivery.set(delivery)
    try:
        yield
    finally:
        _delivery.reset(token)
