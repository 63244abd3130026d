"""
Waking relays at commit on PostgreSQL: LISTEN/NOTIFY, with polling as the fallback.

Every statement that writes an outbox row on PostgreSQL also notifies :data:`CHANNEL`.
PostgreSQL holds a transaction's notifications until it commits (and drops them when it, or
the savepoint that sent them, rolls back) and sends one per channel and payload per
transaction, so a commit wakes each listening relay once, however many rows it wrote. A
relay listens on a connection of its own (asyncpg only: other drivers poll); a lost
connection is reopened with the package's backoff, and each (re)connect wakes the relay once
for what was committed while nobody listened.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import sqlalchemy as sa

from .._backoff import backoff

if TYPE_CHECKING:
    from ..repository.sqlalchemy import Database

__all__ = ["CHANNEL", "PING_SECONDS", "can_listen", "listen", "notifying_insert"]

logger = logging.getLogger("aiosignals.outbox")

CHANNEL = "aiosignals_outbox"
"""The channel outbox writes notify and relays listen on (the table's name)."""

PING_SECONDS = 10.0
"""How often a listening connection is checked: a connection cut silently shows no close."""


def notifying_insert(table: sa.Table, columns: list[str]) -> sa.Insert:
    """
    Return an INSERT of one row of *table* (parameters named after *columns*) that notifies.

    The notification rides in the INSERT itself, so a durable save costs no extra round trip.
    """
    notify = sa.select(sa.func.pg_notify(sa.literal_column(f"'{CHANNEL}'"), "")).subquery()
    values = sa.select(*(sa.bindparam(c, type_=table.c[c].type) for c in columns))
    return table.insert().from_select(columns, values.select_from(notify))


def can_listen(db: Database) -> bool:
    """Return whether relays of *db* can be woken by notifications (PostgreSQL on asyncpg)."""
    return db.engine.dialect.name == "postgresql" and db.engine.dialect.driver == "asyncpg"


async def listen(db: Database, wake: Callable[[], None], relay_name: str) -> None:
    """
    Call *wake* at each notification of *CHANNEL* and after each (re)connect, until cancelled.

    Nothing here ever ends the relay: a failure is logged and the connection reopened after
    a backoff (the relay polls meanwhile).
    """
    failures = 0

    def connected() -> None:
        nonlocal failures
        failures = 0

    while True:
        try:
            async with db.engine.connect() as connection:
                try:
                    await _listen_on(connection, wake, connected)
                finally:
                    # Never back to the pool: the connection still LISTENs. Shielded, as
                    # the relay's cancellation is the usual way here, but bounded.
                    with anyio.move_on_after(5, shield=True):
                        await connection.invalidate()
        except Exception as exc:  # noqa: BLE001 -- any failure: reconnect, the relay polls meanwhile
            failures += 1
            delay = backoff(failures, base=0.1, cap=30.0)
            logger.warning(
                "outbox relay %s: listening for commits failed (%s); polling, reconnecting in"
                " %.1f s",
                relay_name,
                exc,
                delay,
            )
            await anyio.sleep(delay)


async def _listen_on(
    connection: Any, wake: Callable[[], None], connected: Callable[[], None]
) -> None:
    """Listen on *connection* until it is lost: raise then."""
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    lost = anyio.Event()

    def on_close(*_: object) -> None:
        lost.set()

    def on_notify(*_: object) -> None:
        wake()

    driver.add_termination_listener(on_close)
    await driver.add_listener(CHANNEL, on_notify)
    connected()
    wake()  # for what committed while nobody listened
    while True:
        with anyio.move_on_after(PING_SECONDS):
            await lost.wait()
        if lost.is_set():
            raise ConnectionError("the listening connection was closed")
        with anyio.fail_after(PING_SECONDS):
            await driver.fetchval("SELECT 1")
