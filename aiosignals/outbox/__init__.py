"""
The durable outbox: durable receivers' calls stored with the entities, delivered after commit.

Connect a receiver with ``durable=True`` and a stable ``dispatch_uid``; a send inside a
:class:`~aiosignals.repository.sqlalchemy.Database` transaction writes one outbox row per
durable receiver in that transaction, and an :class:`OutboxRelay` delivers the rows. Needs
the ``sqlalchemy`` extra.
"""

try:
    import sqlalchemy as _sqlalchemy
except ImportError as _error:  # pragma: no cover -- exercised by the minimal session
    raise ImportError(
        f'aiosignals.outbox needs SQLAlchemy: pip install "aiosignals[sqlalchemy]" ({_error})'
    ) from _error

from .._delivery import Delivery, current_delivery
from ._memory import MemoryOutboxStore
from ._relay import OutboxRelay
from ._sqlalchemy import SQLAlchemyOutboxStore
from ._store import OutboxRow, OutboxStore, Outcomes, PendingReceiver

del _sqlalchemy  # Imported only to check that the extra is installed.

__all__ = [
    "Delivery",
    "MemoryOutboxStore",
    "OutboxRelay",
    "OutboxRow",
    "OutboxStore",
    "Outcomes",
    "PendingReceiver",
    "SQLAlchemyOutboxStore",
    "current_delivery",
]
