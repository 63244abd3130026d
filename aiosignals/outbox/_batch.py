"""
One claimed batch being delivered: each ordering key's rows in commit order, keys side by side.

The rows of one receiver and one ordering key form a lane, delivered one after the other;
a row that fails holds back the rest of its lane (they are given back, to be claimed again
after it), never another lane. Up to *concurrency* lanes run at once. A batch holding a row
that some relay died delivering runs one row at a time, in id order, that row alone: if it
kills this relay too, only its own attempt counts the death.
"""

from __future__ import annotations

import asyncio
import logging
import math
import traceback
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from ._progress import BatchProgress
    from ._store import OutboxRow

__all__ = ["Batch", "Permanent", "group_to_mark"]

logger = logging.getLogger("aiosignals.outbox")


class Permanent(Exception):  # noqa: N818 -- internal marker, never raised to users
    """A row that no retry can deliver: parked as dead at once."""


def _key(row: OutboxRow) -> tuple[str, str]:
    return (row.dispatch_uid, row.ordering_key)


def _deaths(row: OutboxRow) -> int:
    """How many times a relay died (or lost its lease) with the row in hand."""
    return row.attempts - row.failures


def group_to_mark(
    rows: Sequence[OutboxRow],
    start: int,
    size: int,
    max_attempts: int,
    skip: Callable[[OutboxRow], bool] = lambda row: False,
) -> list[int]:
    """Return the rows from *start* on to mark as started together, but those *skip* names."""
    group: list[int] = []
    for row in rows[start : start + size]:
        deaths = _deaths(row)
        if skip(row) or deaths >= max_attempts:
            continue  # not delivered in this batch
        if deaths and group:
            break
        group.append(row.id)
        if deaths:
            # A row some relay died holding goes alone: if it kills this relay too, only
            # it is counted.
            break
    return group


def _cancelled_from_outside() -> bool:
    """Return whether the task running now is being cancelled (not merely handed one)."""
    # anyio's cancel scopes are level-triggered: a cancelled enclosing scope shows here.
    if anyio.current_effective_deadline() == -math.inf:
        return True
    try:
        task = asyncio.current_task()
    except RuntimeError:  # not on asyncio
        return False
    # asyncio's own Task.cancel(), not through a scope, is counted on the task.
    return task is not None and task.cancelling() > 0


class Batch:
    """
    Deliver the claimed *rows*, recording each outcome in *progress*.

    :param halted: whether to stop starting rows (the relay stops, or its lease ran out)
    :param find: the receiver of a row, or ``None`` if this process does not have it
    :param deliver: calls the receiver found for a row
    :param retry_at: when a row that failed this many times is due again
    """

    def __init__(
        self,
        rows: Sequence[OutboxRow],
        progress: BatchProgress,
        *,
        max_attempts: int,
        concurrency: int,
        halted: Callable[[], bool],
        find: Callable[[OutboxRow], Any],
        deliver: Callable[[OutboxRow, Any], Awaitable[None]],
        retry_at: Callable[[int], float],
    ) -> None:
        self.rows = rows
        self.progress = progress
        self.max_attempts = max_attempts
        self.concurrency = concurrency
        self._halted = halted
        self._find = find
        self._deliver = deliver
        self._retry_at = retry_at
        self._position = {row.id: index for index, row in enumerate(rows)}
        self._held_back: set[tuple[str, str]] = set()
        self._marking = anyio.Lock()
        self._lost = False

    async def run(self) -> None:
        """Deliver the batch; a store error ends it and is raised."""
        lanes: dict[tuple[str, str], list[OutboxRow]] = {}
        for row in self.rows:
            lanes.setdefault(_key(row), []).append(row)
        if self.concurrency == 1 or len(lanes) == 1 or any(map(_deaths, self.rows)):
            # One row at a time in id order: held-back keys are skipped as they come.
            await self._lane(self.rows)
            return
        queue = iter(lanes.values())
        errors: list[Exception] = []
        async with anyio.create_task_group() as group:
            for _ in range(min(self.concurrency, len(lanes))):
                group.start_soon(self._worker, queue, group.cancel_scope, errors)
        if errors:
            raise errors[0]

    async def _worker(
        self,
        lanes: Iterator[list[OutboxRow]],
        scope: anyio.CancelScope,
        errors: list[Exception],
    ) -> None:
        try:
            for lane in lanes:
                await self._lane(lane)
        except Exception as exc:  # noqa: BLE001 -- the store failed: run() raises it, not a group
            errors.append(exc)
            scope.cancel()

    def _skip(self, row: OutboxRow) -> bool:
        return row.id in self.progress.settled or _key(row) in self._held_back

    async def _mark(self, row: OutboxRow) -> bool:
        """Mark *row*'s group as started, writing the outcomes so far; False: lease lost."""
        progress = self.progress
        async with self._marking:
            if row.id in progress.marked and not progress.due():
                return True  # another lane marked it while this one waited
            group = group_to_mark(
                self.rows,
                self._position[row.id],
                progress.group_rows,
                self.max_attempts,
                self._skip,
            )
            return await progress.write([i for i in group if i not in progress.marked])

    async def _lane(self, rows: Sequence[OutboxRow]) -> None:
        progress = self.progress
        for index, row in enumerate(rows):
            if self._lost or self._halted():
                # Stopping, or the lease could not be renewed in time: another relay may
                # own the rest by now, so they are not delivered from here.
                for rest in rows[index:]:
                    progress.release(rest.id)
                return
            if _key(row) in self._held_back:
                # An earlier row of this key failed: keep the order, try again later.
                progress.release(row.id)
                continue
            deaths = _deaths(row)
            if deaths >= self.max_attempts:
                error = f"relay died while delivering; {deaths} times"
                progress.dead(row.id, error, failure=False)
                logger.error("outbox row %s is dead: %s", row.id, error)
                continue
            target = self._find(row)
            if target is None:
                progress.release(row.id)  # left, untried, to a relay that has the receiver
                continue
            if (row.id not in progress.marked or progress.due()) and not await self._mark(row):
                self._lost = True
                for rest in rows[index:]:
                    progress.release(rest.id)
                return
            if deaths:
                logger.warning(
                    "outbox row %s: a relay died while delivering it (%s times); trying again",
                    row.id,
                    deaths,
                )
            await self._deliver_row(row, target)

    async def _deliver_row(self, row: OutboxRow, target: Any) -> None:
        try:
            await self._deliver(row, target)
        except Permanent as exc:
            self.progress.dead(row.id, str(exc), failure=True)
            logger.error("outbox row %s is dead: %s", row.id, exc)  # noqa: TRY400 -- the row keeps the error
        except Exception as exc:  # noqa: BLE001 -- any receiver failure is retried
            self._failed(row, "".join(traceback.format_exception_only(exc)))
        except (asyncio.CancelledError, anyio.get_cancelled_exc_class()):
            if _cancelled_from_outside():
                raise  # the row is given back, its attempt not counted
            # A receiver raising CancelledError of its own: a failure like any other, not
            # a reason to stop the relay.
            self._failed(
                row, "CancelledError: raised by the receiver while the relay was not cancelled"
            )
        else:
            self.progress.done(row.id)

    def _failed(self, row: OutboxRow, error: str) -> None:
        self._held_back.add(_key(row))
        error = error.strip()
        failures = row.failures + 1
        if failures >= self.max_attempts:
            self.progress.dead(row.id, error, failure=True)
            logger.error("outbox row %s is dead after %s failures: %s", row.id, failures, error)
        else:
            self.progress.failed(row.id, self._retry_at(failures), error)
            logger.warning("outbox row %s failed (failure %s): %s", row.id, failures, error)
