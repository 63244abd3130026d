"""The outbox table and the writing of its rows, in the entity's transaction."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..models import import_path

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from .._event import Event
    from .._receivers import ReceiverRecord
    from .._signal import Signal

__all__ = ["dump_sender", "outbox", "outbox_metadata", "receiver_path", "write_row"]

outbox_metadata = sa.MetaData()

PENDING = "pending"
DEAD = "dead"

outbox = sa.Table(
    "aiosignals_outbox",
    outbox_metadata,
    # BIGINT on PostgreSQL; SQLite only autoincrements an INTEGER PRIMARY KEY.
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("dispatch_uid", sa.String(255), nullable=False),
    sa.Column("signal", sa.String(255), nullable=False),
    sa.Column("sender", sa.Text(), nullable=False),
    sa.Column("payload", sa.Text(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, default=PENDING),
    # Times a relay started the receiver on the row, and how many of them failed: the
    # difference is how often a relay died (or lost its lease) with the row in hand.
    sa.Column("attempts", sa.Integer(), nullable=False, default=0),
    sa.Column("failures", sa.Integer(), nullable=False, default=0),
    sa.Column("created_at", sa.Float(), nullable=False),
    # Seconds since the epoch: compared in the same way on every backend.
    sa.Column("available_at", sa.Float(), nullable=False),
    sa.Column("locked_until", sa.Float(), nullable=True),
    sa.Column("locked_by", sa.String(255), nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    # The receiver's "module:qualname" when the row was written: names the module a relay
    # without that receiver has to import.
    sa.Column("receiver", sa.Text(), nullable=True),
    sa.Index("aiosignals_outbox_due", "status", "dispatch_uid", "id"),
)


_INSERT = outbox.insert()


def dump_sender(sender: Any) -> str:
    """
    Return how a durable receiver's sender is stored: by import path, or as a string.

    :raises TypeError: for a sender that cannot be stored and found again
    """
    if sender is None:
        return "none:"
    if isinstance(sender, str):
        return f"str:{sender}"
    if isinstance(sender, type) or callable(sender):
        path = import_path(sender)
        if "<locals>" in path:
            raise TypeError(
                f"the sender {sender!r} of a durable receiver is defined inside a function,"
                " so a relay cannot import it: define it at module level"
            )
        return f"py:{path}"
    raise TypeError(
        f"a durable receiver's sender must be a class, a function, a string or None to be"
        f" stored in the outbox, not {sender!r}"
    )


def receiver_path(record: ReceiverRecord) -> str | None:
    """Return ``module:qualname`` of *record*'s receiver, or ``None`` once it is gone."""
    fn = record.resolve()
    if fn is None:
        return None
    # Bound methods name their function; callable objects their class.
    target: object = getattr(fn, "__func__", fn)
    named: object = target if hasattr(target, "__qualname__") else type(target)
    return f"{getattr(named, '__module__', '?')}:{getattr(named, '__qualname__', '?')}"


async def write_row(
    session: AsyncSession, signal: Signal[Any], record: ReceiverRecord, sender: Any, payload: Event
) -> None:
    """Insert one outbox row for *record* in *session*'s transaction."""
    now = time.time()
    # Both are checked when a durable receiver connects.
    assert record.dispatch_uid is not None
    assert signal.name is not None
    # One prebuilt statement with parameters: compiled once and cached by SQLAlchemy,
    # where .values(...) would build (and key) a new statement per row.
    await session.execute(
        _INSERT,
        {
            "dispatch_uid": record.dispatch_uid,
            "signal": signal.name,
            "sender": dump_sender(sender),
            "payload": payload.model_dump_json(),
            "status": PENDING,
            "attempts": 0,
            "failures": 0,
            "receiver": receiver_path(record),
            "created_at": now,
            "available_at": now,
        },
    )
