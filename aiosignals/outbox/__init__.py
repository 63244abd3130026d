"""
The durable outbox: durable receivers' calls stored with the entities, delivered after commit.

Connect a receiver with ``durable=True`` and a stable ``dispatch_uid``; a send inside a
:class:`~aiosignals.repository.sqlalchemy.Database` transaction writes one outbox row per
durable receiver in that transaction, and an :class:`OutboxRelay` delivers the rows. Needs
the ``sqlalchemy`` extra.
"""

from ._relay import Delivery, OutboxRelay, current_delivery

__all__ = ["Delivery", "OutboxRelay", "current_delivery"]
