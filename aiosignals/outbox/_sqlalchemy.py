"""The outbox kept in a table of the entities' database: every statement the outbox runs."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY

from ._store import DEAD, PENDING, OutboxRow, Outcomes, PendingReceiver, new_row, receiver_path
from ._table import outbox, outbox_metadata
from ._wakeup import notifying_insert

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from .._event import Event
    from .._records import ReceiverRecord
    from .._signal import Signal
    from ..repository.sqlalchemy import Database

__all__ = ["SQLAlchemyOutboxStore", "write_row"]

# Any constant will do: it only has to be the same in every relay of one database.
_CLAIM_LOCK = 0x616F_7369_676E

_INSERT = outbox.insert()
# On PostgreSQL the row's INSERT also wakes the listening relays, at commit; one
# statement per set of columns written.
_NOTIFYING_INSERTS: dict[tuple[str, ...], sa.Insert] = {}


async def write_row(
    session: AsyncSession, signal: Signal[Any], record: ReceiverRecord, sender: Any, payload: Event
) -> None:
    """Insert one outbox row for *record* in *session*'s transaction."""
    assert record.dispatch_uid is not None  # checked when a durable receiver connects
    row = new_row(
        signal,
        record.dispatch_uid,
        sender,
        payload,
        time.time(),
        ordering=record.ordering,
        receiver=receiver_path(record),
        where=f"the outbox table {outbox.name!r}",
    )
    # One prebuilt statement with parameters: compiled once and cached by SQLAlchemy,
    # where .values(...) would build (and key) a new statement per row.
    statement = _INSERT
    if session.get_bind().dialect.name == "postgresql":
        columns = tuple(row)
        if columns not in _NOTIFYING_INSERTS:
            _NOTIFYING_INSERTS[columns] = notifying_insert(outbox, list(columns))
        statement = _NOTIFYING_INSERTS[columns]
    await session.execute(statement, row)


def _row(row: Any) -> OutboxRow:
    return OutboxRow(**row._mapping)


class SQLAlchemyOutboxStore:
    """
    The outbox table of *db*, as an :class:`~aiosignals.outbox.OutboxStore`.

    What :class:`~aiosignals.outbox.OutboxRelay` uses when given a
    :class:`~aiosignals.repository.sqlalchemy.Database`.

    Several relays may share one PostgreSQL database: their claims take turns (an advisory
    lock) and skip rows locked by anything else. On SQLite run one relay.

    :param db: the database holding the outbox table

    .. versionadded:: 0.2
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        """The database holding the outbox table."""

    def __repr__(self) -> str:
        return f"SQLAlchemyOutboxStore({self.db!r})"

    @property
    def name(self) -> str:
        """The database's ``name``."""
        return self.db.name

    async def create_table(self) -> None:
        """Create the outbox table if it does not exist, upgrading one of an earlier version."""
        async with self.db.engine.begin() as connection:
            await connection.run_sync(outbox_metadata.create_all)

    async def has_table(self) -> bool:
        """Return whether the database has an outbox table."""
        async with self.db.engine.connect() as connection:
            return await connection.run_sync(lambda sync: sa.inspect(sync).has_table(outbox.name))

    def _ids_in(self, ids: Collection[int]) -> sa.ColumnElement[bool]:
        """Return "the row's id is one of *ids*", as one statement whatever their number."""
        if self.db.is_sqlite:
            return outbox.c.id.in_(ids)
        # One array parameter: an IN list would be a new statement (compiled, and prepared
        # by PostgreSQL) for each length.
        return outbox.c.id == sa.any_(sa.literal(list(ids), ARRAY(sa.BigInteger())))

    def _due(self, now: float, limit: int, skip: Collection[str]) -> sa.Select[tuple[int]]:
        """Select the ids of the rows due at *now* whose turn it is, in id order."""
        due = sa.and_(
            outbox.c.status == PENDING,
            outbox.c.dispatch_uid.not_in(list(skip)),
            outbox.c.available_at <= now,
            sa.or_(outbox.c.locked_until.is_(None), outbox.c.locked_until < now),
        )
        # A row waits while an earlier row of its receiver and key is leased or backing
        # off: that is what keeps each key's rows in commit order, whichever relay holds
        # them. The first such row of each key is found in one pass over the pending rows;
        # a correlated "earlier row exists" test would rescan a key's earlier rows for
        # every row: quadratic in the backlog.
        waiting = outbox.alias("waiting")
        blocking = (
            sa.select(
                waiting.c.dispatch_uid,
                waiting.c.ordering_key,
                sa.func.min(waiting.c.id).label("first_id"),
            )
            .where(
                waiting.c.status == PENDING,
                sa.or_(waiting.c.available_at > now, waiting.c.locked_until >= now),
            )
            .group_by(waiting.c.dispatch_uid, waiting.c.ordering_key)
            .cte("blocking")
            # Computed once even when the planner's statistics say the table is empty, as
            # they do for an outbox analyzed while empty: inlined, PostgreSQL may rerun it
            # for every row.
            .prefix_with("MATERIALIZED", dialect="postgresql")
        )
        held_back = sa.exists().where(
            blocking.c.dispatch_uid == outbox.c.dispatch_uid,
            blocking.c.ordering_key == outbox.c.ordering_key,
            blocking.c.first_id < outbox.c.id,
        )
        return sa.select(outbox.c.id).where(due, ~held_back).order_by(outbox.c.id).limit(limit)

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
        """Lease the rows due at *now* and mark those *mark* picks, in one transaction."""
        query = self._due(now, limit, skip)
        # A claim alone is no attempt: attempts are counted as receivers start.
        values = {"locked_until": now + lease, "locked_by": relay}
        async with self.db.engine.begin() as connection:
            if self.db.is_sqlite:
                ids = list((await connection.scalars(query)).all())
                if not ids:
                    return []
                await connection.execute(outbox.update().where(outbox.c.id.in_(ids)).values(values))
                result = await connection.execute(
                    sa.select(outbox).where(outbox.c.id.in_(ids)).order_by(outbox.c.id)
                )
                rows = [_row(row) for row in result]
            else:
                # Claims take turns (deliveries do not): the next claimer then sees these
                # leases and skips the rows behind them. SKIP LOCKED covers anything else
                # holding a row, such as `outbox retry`.
                await connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_CLAIM_LOCK)))
                # One round trip: the rows are chosen, locked, leased and returned together.
                # MATERIALIZED: the LIMIT is applied once, never re-evaluated per updated row.
                claimed = (
                    query.with_for_update(skip_locked=True)
                    .cte("claimed")
                    .prefix_with("MATERIALIZED", dialect="postgresql")
                )
                result = await connection.execute(
                    outbox.update()
                    .where(outbox.c.id == claimed.c.id)
                    .values(values)
                    .returning(*outbox.c)
                )
                rows = sorted((_row(row) for row in result), key=lambda row: row.id)
                if not rows:
                    return []
            marked = mark(rows)
            if marked:
                await connection.execute(
                    outbox.update()
                    .where(self._ids_in(marked))
                    .values(attempts=outbox.c.attempts + 1)
                )
            return rows

    async def renew(self, relay: str, ids: Collection[int], until: float) -> None:
        """Extend *relay*'s leases of *ids* until *until*."""
        async with self.db.engine.begin() as connection:
            await connection.execute(
                outbox.update()
                .where(self._ids_in(ids), outbox.c.locked_by == relay)
                .values(locked_until=until)
            )

    async def finish(self, relay: str, outcomes: Outcomes, mark: Collection[int]) -> bool:
        """Write *outcomes* and mark *mark* as started, in one transaction."""
        if self.db.is_sqlite or outcomes.failed or outcomes.dead or outcomes.unmarked:
            return await self._finish_in_transaction(relay, outcomes, mark)
        if outcomes.released:
            return await self._finish_in_transaction(relay, outcomes, mark)
        return await self._finish_in_one_statement(relay, outcomes.done, mark)

    async def _finish_in_transaction(
        self, relay: str, outcomes: Outcomes, mark: Collection[int]
    ) -> bool:
        mine = outbox.c.locked_by == relay
        unlocked = {"locked_until": None, "locked_by": None}
        async with self.db.engine.begin() as connection:
            if outcomes.done:
                await connection.execute(outbox.delete().where(self._ids_in(outcomes.done), mine))
            for row_id, retry_at, error in outcomes.failed:
                await connection.execute(
                    outbox.update()
                    .where(outbox.c.id == row_id, mine)
                    .values(
                        failures=outbox.c.failures + 1,
                        available_at=retry_at,
                        last_error=error,
                        **unlocked,
                    )
                )
            for row_id, error, failure in outcomes.dead:
                await connection.execute(
                    outbox.update()
                    .where(outbox.c.id == row_id, mine)
                    .values(
                        status=DEAD,
                        failures=outbox.c.failures + int(failure),
                        last_error=error,
                        **unlocked,
                    )
                )
            if outcomes.unmarked:
                # Marked but never started (or handed back by a cancellation): not an attempt.
                await connection.execute(
                    outbox.update()
                    .where(self._ids_in(outcomes.unmarked), mine)
                    .values(attempts=outbox.c.attempts - 1, **unlocked)
                )
            if outcomes.released:
                await connection.execute(
                    outbox.update().where(self._ids_in(outcomes.released), mine).values(unlocked)
                )
            if not mark:
                return True
            result = await connection.execute(
                outbox.update()
                .where(self._ids_in(mark), mine)
                .values(attempts=outbox.c.attempts + 1)
            )
            return result.rowcount == len(mark)

    async def _finish_in_one_statement(
        self, relay: str, done: Collection[int], mark: Collection[int]
    ) -> bool:
        # The usual case on PostgreSQL, rows delivered and the next ones marked: one
        # statement, atomic on its own, is one round trip where a transaction is four
        # (BEGIN, DELETE, UPDATE, COMMIT), and the relay waits for it between groups.
        mine = outbox.c.locked_by == relay
        deleted = outbox.delete().where(self._ids_in(done), mine).cte("deleted")
        marked = (
            outbox.update()
            .where(self._ids_in(mark), mine)
            .values(attempts=outbox.c.attempts + 1)
            .returning(outbox.c.id)
            .cte("marked")
        )
        query = sa.select(sa.func.count()).select_from(marked).add_cte(deleted)
        async with self.db.engine.connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            return await autocommit.scalar(query) == len(mark)

    async def pending_receivers(self) -> list[PendingReceiver]:
        """Return each ``dispatch_uid`` with pending rows, and how many it has."""
        query = (
            sa.select(
                outbox.c.dispatch_uid,
                sa.func.min(outbox.c.signal),
                sa.func.min(outbox.c.receiver),
                sa.func.count(),
            )
            .where(outbox.c.status == PENDING)
            .group_by(outbox.c.dispatch_uid)
        )
        async with self.db.engine.connect() as connection:
            return [PendingReceiver(*row) for row in await connection.execute(query)]

    async def rows(
        self, *, status: str | None = None, ids: Collection[int] = ()
    ) -> list[OutboxRow]:
        """Return the rows in id order: of *status* (any if ``None``), and of *ids* if given."""
        query = sa.select(outbox).order_by(outbox.c.id)
        if status is not None:
            query = query.where(outbox.c.status == status)
        if ids:
            query = query.where(outbox.c.id.in_(ids))
        async with self.db.engine.connect() as connection:
            return [_row(row) for row in await connection.execute(query)]

    async def requeue(self, ids: Collection[int], now: float) -> int:
        """Make dead rows (of *ids* if given) pending and due at *now*, attempts reset."""
        values = {
            "status": PENDING,
            "attempts": 0,
            "failures": 0,
            "available_at": now,
            "locked_until": None,
        }
        return await self._change_dead(outbox.update().values(values), ids)

    async def purge(self, ids: Collection[int]) -> int:
        """Delete dead rows (of *ids* if given); return how many."""
        return await self._change_dead(outbox.delete(), ids)

    async def _change_dead(self, statement: sa.Update | sa.Delete, ids: Collection[int]) -> int:
        dead = outbox.c.status == DEAD
        async with self.db.engine.begin() as connection:
            result = await connection.execute(
                statement.where(dead, outbox.c.id.in_(ids) if ids else sa.true())
            )
        return result.rowcount
