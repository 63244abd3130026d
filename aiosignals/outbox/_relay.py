from __future__ import annotations

import logging
import os
import random
import socket
import time
import traceback
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from .._signal import registry
from ..models import load_payload, resolve_path
from ._table import DEAD, PENDING, outbox, outbox_metadata

if TYPE_CHECKING:
    from ..repository.sqlalchemy import Database

__all__ = ["Delivery", "OutboxRelay", "current_delivery"]

logger = logging.getLogger("aiosignals.outbox")

# Any constant will do: it only has to be the same in every relay of one database.
_CLAIM_LOCK = 0x616F_7369_676E


@dataclass(frozen=True, slots=True)
class Delivery:
    """
    The outbox row a durable receiver is being called for.

    .. versionadded:: 0.1
    """

    id: int
    """
    The row id: the same on every redelivery and never reused by the database, so a
    receiver can de-duplicate by it.
    """

    attempt: int
    """1 on the first try, 2 on the first retry, and so on."""

    dispatch_uid: str
    """The receiver's ``dispatch_uid``."""

    database: str = "default"
    """The ``name`` of the :class:`~aiosignals.repository.sqlalchemy.Database` of the row."""

    @property
    def key(self) -> str:
        """
        ``outbox:<database>:<id>``: an idempotency key to hand to another system.

        Row ids are unique within one database only; the key also names the database, so
        the rows of two databases (given different ``name`` s) never share a key.

        .. versionadded:: 0.1
        """
        return f"outbox:{self.database}:{self.id}"


_delivery: ContextVar[Delivery | None] = ContextVar("aiosignals_delivery", default=None)


def current_delivery() -> Delivery | None:
    """
    Return the outbox delivery of the durable receiver running now, or ``None``.

    .. versionadded:: 0.1
    """
    return _delivery.get()


class _Permanent(Exception):  # noqa: N818 -- internal marker, never raised to users
    """A row that no retry can deliver: parked as dead at once."""


def _load_sender(stored: str) -> Any:
    kind, _, value = stored.partition(":")
    if kind == "none":
        return None
    if kind == "str":
        return value
    try:
        return resolve_path(value)
    except (ImportError, AttributeError) as exc:
        raise LookupError(f"cannot import the sender {value!r}: {exc}") from exc


@dataclass(slots=True)
class _Outcome:
    done: list[int]
    failed: list[tuple[int, int, str]]  # id, attempts, error
    dead: list[tuple[int, str]]
    released: list[int]


class OutboxRelay:
    """
    Delivers durable receivers' outbox rows after their transactions committed.

    Delivery is at least once, in commit order per receiver: a receiver's rows go one
    after the other, and a row that fails holds back that receiver's later rows until it
    is delivered or dead. A failed row is retried after an exponential backoff with
    jitter, and parked as dead (with its last error) after *max_attempts*. Rows are claimed
    with a lease: a relay that dies mid-delivery leaves them to be redelivered once the
    lease expires. Several relays may share one PostgreSQL database; on SQLite run one.

    Receivers are found by ``dispatch_uid`` among those connected in this process, so the
    process running the relay imports the modules that connect them.

    :param db: the database holding the outbox table
    :param batch_size: rows claimed (and finished) per round trip
    :param max_attempts: tries before a row is parked as dead
    :param lease: seconds a claimed row stays reserved for this relay
    :param poll_interval: seconds :meth:`run` waits when nothing is due
    :param backoff: seconds before the first retry; doubles with each attempt
    :param max_backoff: the longest wait between two attempts
    :param name: this relay's name in the rows it leases (default: host and pid)

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        db: Database,
        *,
        batch_size: int = 100,
        max_attempts: int = 10,
        lease: float = 30.0,
        poll_interval: float = 0.5,
        backoff: float = 1.0,
        max_backoff: float = 300.0,
        name: str | None = None,
    ) -> None:
        if batch_size < 1 or max_attempts < 1 or lease <= 0:
            raise ValueError("batch_size and max_attempts must be at least 1, lease positive")
        self.db = db
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.lease = lease
        self.poll_interval = poll_interval
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._stopping = False
        self._wake: anyio.Event | None = None
        self._lease_until = 0.0

    def __repr__(self) -> str:
        return f"OutboxRelay({self.db!r}, name={self.name!r})"

    @staticmethod
    async def create_table(db: Database) -> None:
        """Create the outbox table if it does not exist (``db.create_all`` does it too)."""
        async with db.engine.begin() as connection:
            await connection.run_sync(outbox_metadata.create_all)

    def stop(self) -> None:
        """Ask :meth:`run` to return once the row in hand is finished."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        """
        Deliver due rows until :meth:`stop` is called or the task is cancelled.

        A database that cannot be reached is retried with an exponential backoff (logged,
        at most 30 s apart), so a restart of the database does not end the relay. A
        :meth:`stop` that came before ``run`` makes it return at once; after returning
        the relay may be run again.
        """
        failures = 0
        try:
            while not self._stopping:
                try:
                    finished = await self.run_once()
                except (OSError, SQLAlchemyError) as exc:
                    failures += 1
                    delay = min(30.0, 0.1 * 2.0 ** (failures - 1)) * random.uniform(0.5, 1.0)  # noqa: S311
                    logger.warning(
                        "outbox relay %s: the database failed (%s); retrying in %.1f s",
                        self.name,
                        exc,
                        delay,
                    )
                    await self._pause(delay)
                    continue
                failures = 0
                if finished < self.batch_size:
                    await self._pause(self.poll_interval)
        finally:
            self._stopping = False

    async def _pause(self, seconds: float) -> None:
        # Cut short by stop(): a stopping relay does not sit out its poll interval.
        if self._stopping:
            return
        self._wake = anyio.Event()
        with anyio.move_on_after(seconds):
            await self._wake.wait()
        self._wake = None

    async def run_once(self) -> int:
        """Deliver what is due now, one batch; return how many rows were finished."""
        rows = await self._claim()
        if not rows:
            return 0
        outcome = _Outcome([], [], [], [])
        self._lease_until = time.monotonic() + self.lease
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._keep_leases, [row.id for row in rows])
                await self._deliver_all(rows, outcome)
                group.cancel_scope.cancel()
        finally:
            # What was never tried (the relay is being cancelled) is given back at once
            # rather than left leased until the lease expires.
            seen = {*outcome.done, *outcome.released}
            seen.update(row_id for row_id, *_ in outcome.failed)
            seen.update(row_id for row_id, _ in outcome.dead)
            outcome.released.extend(row.id for row in rows if row.id not in seen)
            # Shielded: what was delivered must be recorded even when the relay is being
            # cancelled, or it would all be delivered again.
            with anyio.CancelScope(shield=True):
                await self._finish(outcome)
        return len(outcome.done) + len(outcome.dead) + len(outcome.failed)

    async def _keep_leases(self, ids: list[int]) -> None:
        # A batch may take longer than one lease (slow receivers): renew it while the
        # batch runs, or another relay would claim these rows and deliver them too.
        while True:
            await anyio.sleep(self.lease / 3)
            renewed_at = time.monotonic()
            try:
                async with self.db.engine.begin() as connection:
                    await connection.execute(
                        outbox.update()
                        .where(outbox.c.id.in_(ids), outbox.c.locked_by == self.name)
                        .values(locked_until=time.time() + self.lease)
                    )
            except (OSError, SQLAlchemyError) as exc:
                logger.warning("outbox relay %s could not renew its lease: %s", self.name, exc)
            else:
                self._lease_until = renewed_at + self.lease

    async def _deliver_all(self, rows: list[Any], outcome: _Outcome) -> None:
        held_back: set[str] = set()
        pending = iter(rows)
        for row in pending:
            if self._stopping or time.monotonic() >= self._lease_until:
                # Stopping, or the lease could not be renewed in time: another relay may
                # own the rest by now, so they are not delivered from here.
                outcome.released.append(row.id)
                outcome.released.extend(r.id for r in pending)
                return
            if row.dispatch_uid in held_back:
                # An earlier row of this receiver failed: keep the order, try again later.
                outcome.released.append(row.id)
                continue
            try:
                await self._deliver(row)
            except _Permanent as exc:
                held_back.add(row.dispatch_uid)
                outcome.dead.append((row.id, str(exc)))
                logger.error("outbox row %s is dead: %s", row.id, exc)  # noqa: TRY400 -- the row keeps the error
            except Exception as exc:  # noqa: BLE001 -- any receiver failure is retried
                held_back.add(row.dispatch_uid)
                error = "".join(traceback.format_exception_only(exc)).strip()
                if row.attempts >= self.max_attempts:
                    outcome.dead.append((row.id, error))
                    logger.error(  # noqa: TRY400 -- the row keeps the error; no traceback per retry
                        "outbox row %s is dead after %s attempts: %s", row.id, row.attempts, error
                    )
                else:
                    outcome.failed.append((row.id, row.attempts, error))
                    logger.warning(
                        "outbox row %s failed (attempt %s): %s", row.id, row.attempts, error
                    )
            else:
                outcome.done.append(row.id)

    async def _deliver(self, row: Any) -> None:
        signal = registry.get(row.signal)
        record = (
            None if signal is None else signal._record_for_uid(row.dispatch_uid)  # pyright: ignore[reportPrivateUsage]
        )
        fn = None if record is None else record.resolve()
        if signal is None or record is None or fn is None:
            # Retried, not dead at once: the receiver may be connected by a process that
            # has not been deployed yet.
            raise LookupError(
                f"no receiver with dispatch_uid {row.dispatch_uid!r} is connected to the"
                f" signal {row.signal!r} in this process"
            )
        sender = _load_sender(row.sender)
        try:
            payload = load_payload(signal.payload_type, sender, row.payload)
        except ValueError as exc:
            # The stored payload no longer fits its model: no retry will make it fit.
            raise _Permanent(f"the stored payload does not validate: {exc}") from exc
        token = _delivery.set(Delivery(row.id, row.attempts, row.dispatch_uid, self.db.name))
        try:
            # The signal's own timeout and thread settings apply, as in a live send.
            await signal._invoke(record, fn, sender, payload, signal.timeout)  # pyright: ignore[reportPrivateUsage]
        finally:
            _delivery.reset(token)

    async def _claim(self) -> list[Any]:
        now = time.time()
        due = sa.and_(
            outbox.c.status == PENDING,
            outbox.c.available_at <= now,
            sa.or_(outbox.c.locked_until.is_(None), outbox.c.locked_until < now),
        )
        # A row waits while an earlier row of its receiver is leased or backing off:
        # that is what keeps each receiver's rows in commit order. The first such row of
        # each receiver is found in one pass over the pending rows; a correlated "earlier
        # row exists" test would rescan a receiver's earlier rows for every row: quadratic
        # in the backlog.
        waiting = outbox.alias("waiting")
        blocking = (
            sa.select(waiting.c.dispatch_uid, sa.func.min(waiting.c.id).label("first_id"))
            .where(
                waiting.c.status == PENDING,
                sa.or_(waiting.c.available_at > now, waiting.c.locked_until >= now),
            )
            .group_by(waiting.c.dispatch_uid)
            .cte("blocking")
            # Computed once even when the planner's statistics say the table is empty, as
            # they do for an outbox analyzed while empty: inlined, PostgreSQL may rerun it
            # for every row.
            .prefix_with("MATERIALIZED", dialect="postgresql")
        )
        held_back = sa.exists().where(
            blocking.c.dispatch_uid == outbox.c.dispatch_uid, blocking.c.first_id < outbox.c.id
        )
        query = sa.select(outbox.c.id).where(due, ~held_back).order_by(outbox.c.id)
        query = query.limit(self.batch_size)
        lease = {
            "locked_until": now + self.lease,
            "locked_by": self.name,
            "attempts": outbox.c.attempts + 1,
        }
        async with self.db.engine.begin() as connection:
            if self.db.is_sqlite:
                ids = list((await connection.scalars(query)).all())
                if not ids:
                    return []
                await connection.execute(outbox.update().where(outbox.c.id.in_(ids)).values(lease))
                result = await connection.execute(
                    sa.select(outbox).where(outbox.c.id.in_(ids)).order_by(outbox.c.id)
                )
                return list(result.all())
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
                .values(lease)
                .returning(*outbox.c)
            )
            return sorted(result.all(), key=lambda row: row.id)

    def _retry_at(self, attempts: int) -> float:
        delay = min(self.max_backoff, self.backoff * 2.0 ** (attempts - 1))
        # Jitter: relays retrying the same failure do not hammer it in step.
        return time.time() + delay * random.uniform(0.5, 1.0)  # noqa: S311 -- not crypto

    async def _finish(self, outcome: _Outcome) -> None:
        # Only rows still leased to this relay: one whose lease was lost is another's now.
        mine = outbox.c.locked_by == self.name
        async with self.db.engine.begin() as connection:
            if outcome.done:
                await connection.execute(outbox.delete().where(outbox.c.id.in_(outcome.done), mine))
            for row_id, attempts, error in outcome.failed:
                await connection.execute(
                    outbox.update()
                    .where(outbox.c.id == row_id, mine)
                    .values(
                        available_at=self._retry_at(attempts),
                        locked_until=None,
                        locked_by=None,
                        last_error=error,
                    )
                )
            for row_id, error in outcome.dead:
                await connection.execute(
                    outbox.update()
                    .where(outbox.c.id == row_id, mine)
                    .values(status=DEAD, locked_until=None, locked_by=None, last_error=error)
                )
            if outcome.released:
                # Never tried: the claim's attempt is given back.
                await connection.execute(
                    outbox.update()
                    .where(outbox.c.id.in_(outcome.released), mine)
                    .values(locked_until=None, locked_by=None, attempts=outbox.c.attempts - 1)
                )
