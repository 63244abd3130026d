"""
A relay's batch as recorded in the outbox, row by row as it goes.

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

from ._store import Outcomes

if TYPE_CHECKING:
    from ._store import OutboxStore

__all__ = ["GROUP_SECONDS", "MAX_GROUP_ROWS", "BatchProgress"]

MAX_GROUP_ROWS = 256
"""The most rows marked as started together: a relay killed mid-batch redoes at most this many."""

GROUP_SECONDS = 0.05
"""Finished rows wait at most this long (and until the next row starts) to be recorded."""


class BatchProgress:
    """
    The rows of one claimed batch: which are marked as started, and what became of each.

    :param store: where the outbox rows are
    :param relay_name: the name the batch's rows are leased under
    :param group_rows: how many rows to mark together at first
    :param marked: the rows marked as started when the batch was claimed
    """

    def __init__(
        self, store: OutboxStore, relay_name: str, group_rows: int, marked: Collection[int]
    ) -> None:
        self._store = store
        self._relay = relay_name
        self.group_rows = group_rows
        """How many rows to mark as started together now (adapted to the receivers' pace)."""
        self.marked: set[int] = set(marked)
        """Rows whose ``attempts`` were raised for this batch and that are not finished yet."""
        self.counts: Counter[str] = Counter()
        """How many rows were delivered, retrying, dead and given back."""
        self.settled: set[int] = set()
        """Rows with an outcome (given back included): nothing more happens to them."""
        self.written_at = time.monotonic()
        self._outcomes = Outcomes()

    def done(self, row_id: int) -> None:
        """Record *row_id* as delivered."""
        self.marked.discard(row_id)
        self.settled.add(row_id)
        self._outcomes.done.append(row_id)
        self.counts["delivered"] += 1

    def failed(self, row_id: int, retry_at: float, error: str) -> None:
        """Record a failure of *row_id*, to be retried at *retry_at* (epoch seconds)."""
        self.marked.discard(row_id)
        self.settled.add(row_id)
        self._outcomes.failed.append((row_id, retry_at, error))
        self.counts["retrying"] += 1

    def dead(self, row_id: int, error: str, *, failure: bool) -> None:
        """Park *row_id* as dead; *failure*: its receiver failed (else it was never run)."""
        self.marked.discard(row_id)
        self.settled.add(row_id)
        self._outcomes.dead.append((row_id, error, failure))
        self.counts["dead"] += 1

    def release(self, row_id: int) -> None:
        """Give *row_id* back unfinished; its attempt is not counted if it was marked."""
        self.settled.add(row_id)
        if row_id in self.marked:
            self.marked.discard(row_id)
            self._outcomes.unmarked.append(row_id)
        else:
            self._outcomes.released.append(row_id)
        self.counts["given back"] += 1

    def due(self) -> bool:
        """Return whether outcomes have waited long enough to be written now."""
        outcomes = self._outcomes
        unwritten = outcomes.done or outcomes.failed or outcomes.dead
        return bool(unwritten) and time.monotonic() - self.written_at >= GROUP_SECONDS

    async def write(self, mark: Collection[int] = ()) -> bool:
        """
        Write the outcomes recorded so far and mark *mark* as started, in one transaction.

        :return: whether every row of *mark* was still leased to this relay (if not, the
            lease was lost and another relay may own them: deliver none of them)
        """
        # The pace of the receivers since the last write, not counting this one's own time.
        elapsed = time.monotonic() - self.written_at
        # Taken out before the write: rows of other lanes finish while it is under way.
        outcomes, self._outcomes = self._outcomes, Outcomes()
        # Marked before the write, so that a row given back meanwhile has its attempt
        # taken back (by a statement that changes nothing if the mark did not happen).
        self.marked.update(mark)
        try:
            marked_all = await self._store.finish(self._relay, outcomes, mark)
        except BaseException:
            # Nothing of the transaction happened: the next write has it all to do.
            self.marked.difference_update(mark)
            outcomes.extend(self._outcomes)
            self._outcomes = outcomes
            raise
        finished = len(outcomes.done) + len(outcomes.failed) + len(outcomes.dead)
        if elapsed > GROUP_SECONDS:
            self.group_rows = max(1, self.group_rows // 2)
        elif finished >= self.group_rows:
            self.group_rows = min(MAX_GROUP_ROWS, self.group_rows * 2)
        self.written_at = time.monotonic()
        return marked_all
