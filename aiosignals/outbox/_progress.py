"""
A relay's batch as recorded in the outbox table, row by row as it goes.

Rows are marked as started before their receivers run, and outcomes written as rows
finish. A row's ``attempts`` counts the times a relay started its receiver and ``failures`` the
times it failed; a row that is neither finished nor leased any more, with more attempts than
failures, was in the hands of a relay that died (or lost its lease) while delivering it.
Marking and recording go together, a group of rows at a time, in one transaction: a
commit per row would cap a relay at a few hundred rows a second. A relay killed mid-batch
redoes at most one group: the group grows (up to :data:`MAX_GROUP_ROWS`) while receivers
are fast, and shrinks to a row at a time when they are slow, so what is redone is at most
about :data:`GROUP_SECONDS` of work, or one row.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Collection
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY

from ._table import DEAD, outbox

if TYPE_CHECKING:
    from ..repository.sqlalchemy import Database

__all__ = ["GROUP_SECONDS", "MAX_GROUP_ROWS", "BatchProgress", "ids_in"]

MAX_GROUP_ROWS = 256
"""The most rows marked as started together: a relay killed mid-batch redoes at most this many."""

GROUP_SECONDS = 0.05
"""Finished rows wait at most this long (and until the next row starts) to be recorded."""


def ids_in(db: Database, ids: Collection[int]) -> sa.ColumnElement[bool]:
    """Return "the row's id is one of *ids*", as one statement whatever their number."""
    if db.is_sqlite:
        return outbox.c.id.in_(ids)
    # One array parameter: an IN list would be a new statement (compiled, and prepared by
    # PostgreSQL) for each length.
    return outbox.c.id == sa.any_(sa.literal(list(ids), ARRAY(sa.BigInteger())))


class BatchProgress:
    """
    The rows of one claimed batch: which are marked as started, and what became of each.

    :param db: the database holding the outbox
    :param relay_name: the name the batch's rows are leased under
    :param group_rows: how many rows to mark together at first
    :param marked: the rows marked as started when the batch was claimed
    """

    def __init__(
        self, db: Database, relay_name: str, group_rows: int, marked: Collection[int]
    ) -> None:
        self._db = db
        self.group_rows = group_rows
        """How many rows to mark as started together now (adapted to the receivers' pace)."""
        self._mine = outbox.c.locked_by == relay_name
        self.marked: set[int] = set(marked)
        """Rows whose ``attempts`` were raised for this batch and that are not finished yet."""
        self.counts: Counter[str] = Counter()
        """How many rows were delivered, retrying, dead and given back."""
        self.written_at = time.monotonic()
        self._done: list[int] = []
        self._failed: list[tuple[int, float, str]] = []
        self._dead: list[tuple[int, str, bool]] = []
        self._released: list[int] = []
        self._unmarked: list[int] = []

    def done(self, row_id: int) -> None:
        """Record *row_id* as delivered."""
        self.marked.discard(row_id)
        self._done.append(row_id)
        self.counts["delivered"] += 1

    def failed(self, row_id: int, retry_at: float, error: str) -> None:
        """Record a failure of *row_id*, to be retried at *retry_at* (epoch seconds)."""
        self.marked.discard(row_id)
        self._failed.append((row_id, retry_at, error))
        self.counts["retrying"] += 1

    def dead(self, row_id: int, error: str, *, failure: bool) -> None:
        """Park *row_id* as dead; *failure*: its receiver failed (else it was never run)."""
        self.marked.discard(row_id)
        self._dead.append((row_id, error, failure))
        self.counts["dead"] += 1

    def release(self, row_id: int) -> None:
        """Give *row_id* back unfinished; its attempt is not counted if it was marked."""
        if row_id in self.marked:
            self.marked.discard(row_id)
            self._unmarked.append(row_id)
        else:
            self._released.append(row_id)
        self.counts["given back"] += 1

    def due(self) -> bool:
        """Return whether outcomes have waited long enough to be written now."""
        unwritten = self._done or self._failed or self._dead
        return bool(unwritten) and time.monotonic() - self.written_at >= GROUP_SECONDS

    async def write(self, mark: Collection[int] = ()) -> bool:
        """
        Write the outcomes recorded so far and mark *mark* as started, in one transaction.

        :return: whether every row of *mark* was still leased to this relay (if not, the
            lease was lost and another relay may own them: deliver none of them)
        """
        # The pace of the receivers since the last write, not counting this one's own time.
        elapsed = time.monotonic() - self.written_at
        mine = self._mine
        marked_all = True
        async with self._db.engine.begin() as connection:
            if self._done:
                await connection.execute(outbox.delete().where(ids_in(self._db, self._done), mine))
            for row_id, retry_at, error in self._failed:
                await connection.execute(
                    outbox.update()
                    .where(outbox.c.id == row_id, mine)
                    .values(
                        failures=outbox.c.failures + 1,
                        available_at=retry_at,
                        locked_until=None,
                        locked_by=None,
                        last_error=error,
                    )
                )
            for row_id, error, failure in self._dead:
                await connection.execute(
                    outbox.update()
                    .where(outbox.c.id == row_id, mine)
                    .values(
                        status=DEAD,
                        failures=outbox.c.failures + int(failure),
                        locked_until=None,
                        locked_by=None,
                        last_error=error,
                    )
                )
            if self._unmarked:
                # Marked but never started (or handed back by a cancellation): not an attempt.
                await connection.execute(
                    outbox.update()
                    .where(ids_in(self._db, self._unmarked), mine)
                    .values(attempts=outbox.c.attempts - 1, locked_until=None, locked_by=None)
                )
            if self._released:
                await connection.execute(
                    outbox.update()
                    .where(ids_in(self._db, self._released), mine)
                    .values(locked_until=None, locked_by=None)
                )
            if mark:
                result = await connection.execute(
                    outbox.update()
                    .where(ids_in(self._db, mark), mine)
                    .values(attempts=outbox.c.attempts + 1)
                )
                marked_all = result.rowcount == len(mark)
        self.marked.update(mark)
        finished = len(self._done) + len(self._failed) + len(self._dead)
        if elapsed > GROUP_SECONDS:
            self.group_rows = max(1, self.group_rows // 2)
        elif finished >= self.group_rows:
            self.group_rows = min(MAX_GROUP_ROWS, self.group_rows * 2)
        for pending in (self._done, self._failed, self._dead, self._released, self._unmarked):
            pending.clear()
        self.written_at = time.monotonic()
        return marked_all
