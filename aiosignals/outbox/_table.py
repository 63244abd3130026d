"""The outbox table, and the upgrade of the tables earlier versions made."""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from ._store import PENDING

__all__ = ["outbox", "outbox_metadata"]

logger = logging.getLogger("aiosignals.outbox")

outbox_metadata = sa.MetaData()

outbox = sa.Table(
    "aiosignals_outbox",
    outbox_metadata,
    # BIGINT on PostgreSQL; SQLite only autoincrements an INTEGER PRIMARY KEY.
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("dispatch_uid", sa.String(255), nullable=False),
    sa.Column("signal", sa.String(255), nullable=False),
    sa.Column("sender", sa.Text(), nullable=False),
    sa.Column("payload", sa.Text(), nullable=False),
    # Rows of one receiver and one key are delivered in commit order; "" is the key of
    # a receiver whose rows all keep one order (ordering="receiver", or no entity key).
    sa.Column("ordering_key", sa.Text(), nullable=False, default="", server_default=""),
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
    sa.Index("aiosignals_outbox_due", "status", "dispatch_uid", "ordering_key", "id"),
    # Delivery ids are idempotency keys, so they are never handed out twice: without
    # AUTOINCREMENT SQLite gives the next row max(id) + 1, which is 1 again once the
    # delivered rows are deleted. (PostgreSQL's BIGSERIAL sequence never goes back.)
    sqlite_autoincrement=True,
)


def _add_new_columns(_metadata: sa.MetaData, connection: sa.Connection, **_: Any) -> None:
    """
    Add to an outbox table of an earlier version the columns it lacks.

    ``failures`` starts as the row's ``attempts`` (each of those ended in a failure or a
    death, told apart only since); ``receiver`` stays empty for rows written before;
    ``ordering_key`` is ``""`` for them: each receiver's earlier rows keep one order.
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
    if "ordering_key" not in present:
        connection.exec_driver_sql(
            f"ALTER TABLE {outbox.name} ADD COLUMN ordering_key TEXT NOT NULL DEFAULT ''"
        )


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
