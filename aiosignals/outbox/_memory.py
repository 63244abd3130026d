"""An outbox kept in a dict: the relay's scheduling tested without a database."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any

from ._store import DEAD, PENDING, OutboxRow, Outcomes, PendingReceiver, new_row

if TYPE_CHECKING:
    from .._event import Event
    from .._signal import Signal
    from .._types import Ordering

__all__ = ["MemoryOutboxStore"]


class MemoryOutboxStore:
    """
    Outbox rows in memory, for tests: the same rules as the outbox table, no database.

    Rows are written with :meth:`write`, outside any transaction. One process only.

    :param name: the database name deliveries report in their key

    .. versionadded:: 0.2
    """

    def __init__(self, name: str = "memory") -> None:
        self._name = name
        self._rows: dict[int, OutboxRow] = {}
        self._ids = itertools.count(1)

    def __repr__(self) -> str:
        return f"MemoryOutboxStore({self._name!r}, {len(self._rows)} rows)"

    @property
    def name(self) -> str:
        """The name deliveries report in :attr:`Delivery.key <aiosignals.outbox.Delivery.key>`."""
        return self._name

    def write(
        self,
        signal: Signal[Any],
        sender: Any,
        payload: Event,
        *,
        dispatch_uid: str,
        now: float,
        ordering: Ordering = "key",
    ) -> int:
        """
        Store a call of the durable receiver *dispatch_uid* for a send of *signal* at *now*.

        :return: the row's id
        :raises TypeError: if the payload or the sender cannot be stored
        """
        row_id = next(self._ids)
        fields = new_row(signal, dispatch_uid, sender, payload, now, ordering=ordering)
        self._rows[row_id] = OutboxRow(id=row_id, **fields)
        return row_id

    async def claim(
        self,
        relay: str,
        *,
        now: float,
        lease: float,
        limit: int,
        skip: Collection[str],
        mark: Callable[[Sequence[OutboxRow]], Collection[int]],
    ) -> list[OutboxRow]:
        """Lease the rows due at *now* and mark those *mark* picks."""
        blocked: set[tuple[str, str]] = set()
        claimed: list[OutboxRow] = []
        for row in sorted(self._rows.values(), key=lambda row: row.id):
            if row.status != PENDING or row.dispatch_uid in skip:
                continue
            key = (row.dispatch_uid, row.ordering_key)
            leased = row.locked_until is not None and row.locked_until >= now
            if row.available_at > now or leased:
                blocked.add(key)
            elif key not in blocked and len(claimed) < limit:
                row.locked_until, row.locked_by = now + lease, relay
                claimed.append(dataclasses.replace(row))
        for row_id in mark(claimed):
            self._rows[row_id].attempts += 1
        return claimed

    def _mine(self, relay: str, ids: Collection[int]) -> list[OutboxRow]:
        return [row for row_id in ids if (row := self._rows.get(row_id)) and row.locked_by == relay]

    async def renew(self, relay: str, ids: Collection[int], until: float) -> None:
        """Extend *relay*'s leases of *ids* until *until*."""
        for row in self._mine(relay, ids):
            row.locked_until = until

    async def finish(self, relay: str, outcomes: Outcomes, mark: Collection[int]) -> bool:
        """Write *outcomes* and mark *mark* as started."""
        for row in self._mine(relay, outcomes.done):
            del self._rows[row.id]
        for row_id, retry_at, error in outcomes.failed:
            for row in self._mine(relay, [row_id]):
                row.failures += 1
                row.available_at, row.last_error = retry_at, error
                row.locked_until = row.locked_by = None
        for row_id, error, failure in outcomes.dead:
            for row in self._mine(relay, [row_id]):
                row.failures += int(failure)
                row.status, row.last_error = DEAD, error
                row.locked_until = row.locked_by = None
        for row in self._mine(relay, outcomes.unmarked):
            row.attempts -= 1
            row.locked_until = row.locked_by = None
        for row in self._mine(relay, outcomes.released):
            row.locked_until = row.locked_by = None
        marked = self._mine(relay, mark)
        for row in marked:
            row.attempts += 1
        return len(marked) == len(mark)

    async def pending_receivers(self) -> list[PendingReceiver]:
        """Return each ``dispatch_uid`` with pending rows, and how many it has."""
        found: dict[str, PendingReceiver] = {}
        for row in self._rows.values():
            if row.status == PENDING:
                seen = found.get(row.dispatch_uid)
                count = 1 if seen is None else seen.count + 1
                found[row.dispatch_uid] = PendingReceiver(
                    row.dispatch_uid, row.signal, row.receiver, count
                )
        return list(found.values())

    async def rows(
        self, *, status: str | None = None, ids: Collection[int] = ()
    ) -> list[OutboxRow]:
        """Return copies of the rows in id order: of *status* (any if ``None``), of *ids*."""
        return [
            dataclasses.replace(row)
            for row_id, row in sorted(self._rows.items())
            if (status is None or row.status == status) and (not ids or row_id in ids)
        ]

    async def requeue(self, ids: Collection[int], now: float) -> int:
        """Make dead rows (of *ids* if given) pending and due at *now*, attempts reset."""
        dead = await self.rows(status=DEAD, ids=ids)
        for row in dead:
            self._rows[row.id] = dataclasses.replace(
                row, status=PENDING, attempts=0, failures=0, available_at=now, locked_until=None
            )
        return len(dead)

    async def purge(self, ids: Collection[int]) -> int:
        """Delete dead rows (of *ids* if given); return how many."""
        dead = await self.rows(status=DEAD, ids=ids)
        for row in dead:
            del self._rows[row.id]
        return len(dead)
