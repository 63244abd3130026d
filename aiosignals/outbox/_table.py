"""The outbox table and the writing of its rows, in the entity's transaction."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event

from ..models import dump_payload, import_path
from ._wakeup import notifying_insert

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from .._event import Event
    from .._receivers import ReceiverRecord
    from .._signal import Signal

__all__ = ["dump_sender", "outbox", "outbox_metadata", "receiver_path", "write_row"]

logger = logging.getLogger("aiosignals.outbox")

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
    sa.Column("failures", sa.Integer(), nullable=False, default=0, server_default="0"),
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
    # Delivery ids are idempotency keys, so they are never handed out twice: without
    # AUTOINCREMENT SQLite gives the next row max(id) + 1, which is 1 again once the
    # delivered rows are deleted. (PostgreSQL's BIGSERIAL sequence never goes back.)
    sqlite_autoincrement=True,
)


_INSERT = outbox.insert()
# On PostgreSQL the row's INSERT also wakes the listening relays, at commit.
_INSERT_NOTIFYING = notifying_insert(
    outbox,
    [
        *("dispatch_uid", "signal", "sender", "payload", "status", "attempts", "failures"),
        *("receiver", "created_at", "available_at"),
    ],
)


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
    try:
        text = dump_payload(payload)
    except TypeError as exc:
        # Raised from a save, far from the durable receiver that needs the row: say which.
        raise TypeError(
            f"cannot write the payload of signal {signal.name!r} to the outbox table"
            f" {outbox.name!r} for the durable receiver {record.dispatch_uid!r}: {exc}"
        ) from exc
    # One prebuilt statement with parameters: compiled once and cached by SQLAlchemy,
    # where .values(...) would build (and key) a new statement per row.
    postgres = session.get_bind().dialect.name == "postgresql"
    await session.execute(
        _INSERT_NOTIFYING if postgres else _INSERT,
        {
            "dispatch_uid": record.dispatch_uid,
            "signal": signal.name,
            "sender": dump_sender(sender),
            "payload": text,
            "status": PENDING,
            "attempts": 0,
            "failures": 0,
            "receiver": receiver_path(record),
            "created_at": now,
            "available_at": now,
        },
    )


def _add_new_columns(_metadata: sa.MetaData, connection: sa.Connection, **_: Any) -> None:
    """
    Add to an outbox table of an earlier version the columns it lacks.

    ``failures`` starts as the row's ``attempts`` (each of those ended in a failure or a
    death, told apart only since); ``receiver`` stays empty for rows written before.
    """
    inspector = sa.inspect(connection)
    if not inspector.has_table(outbox.name):
        return
    present = {column["name"] for column in inspector.get_columns(outbox.name)}
    if "failures" not in present:
        connection.exec_driver_sql(
            f"ALTER TABLE {outbox.name} ADD COLUMN failures INTEGER NOT NULL DEFAULT 0"
        )
        connection.exec_driver_sql(f"UPDATE {outbox.name} SET failures = attempts")  # noqa: S608 -- our own names
    if "receiver" not in present:
        connection.exec_driver_sql(f"ALTER TABLE {outbox.name} ADD COLUMN receiver TEXT")


# Before the SQLite rebuild below, which then copies these columns too.
event.listen(outbox_metadata, "before_create", _add_new_columns)

_LEGACY = "aiosignals_outbox_pre_autoincrement"


def _upgrade_sqlite_table(_metadata: sa.MetaData, connection: sa.Connection, **_: Any) -> None:
    """
    Rebuild an SQLite outbox table made by an earlier version, which lacks AUTOINCREMENT.

    Runs whenever the outbox table is created (``db.create_all``,
    ``OutboxRelay.create_table``, the ``aiosignals relay`` command): the rows are copied
    into a table made as :data:`outbox` is, in one transaction, so nothing is lost and the
    ids go on from the highest one left in the table.
    """
    if connection.dialect.name != "sqlite":
        return
    ddl = connection.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (outbox.name,)
    ).scalar()
    if ddl is None or "AUTOINCREMENT" in ddl.upper():
        return
    # A savepoint is a transaction of its own when none is open, whatever the driver's
    # transaction mode: the table is rebuilt entirely or not at all.
    connection.exec_driver_sql("SAVEPOINT aiosignals_outbox_upgrade")
    try:
        old_columns = {
            row[1] for row in connection.exec_driver_sql(f"PRAGMA table_info({outbox.name})")
        }
        columns = ", ".join(c.name for c in outbox.columns if c.name in old_columns)
        connection.exec_driver_sql(f"ALTER TABLE {outbox.name} RENAME TO {_LEGACY}")
        for index in outbox.indexes:
            connection.exec_driver_sql(f"DROP INDEX IF EXISTS {index.name}")
        outbox.create(connection)
        copied = connection.exec_driver_sql(
            f"INSERT INTO {outbox.name} ({columns}) SELECT {columns} FROM {_LEGACY}"  # noqa: S608 -- our own column names
        ).rowcount
        connection.exec_driver_sql(f"DROP TABLE {_LEGACY}")
    except BaseException:
        connection.exec_driver_sql("ROLLBACK TO aiosignals_outbox_upgrade")
        connection.exec_driver_sql("RELEASE aiosignals_outbox_upgrade")
        raise
    connection.exec_driver_sql("RELEASE aiosignals_outbox_upgrade")
    logger.warning(
        "rebuilt the outbox table %s with AUTOINCREMENT (%d rows kept), so that delivery ids"
        " are never reused; ids of rows delivered and deleted before may be handed out once"
        " more if they were above the highest id left in the table",
        outbox.name,
        copied,
    )


event.listen(outbox_metadata, "before_create", _upgrade_sqlite_table)
