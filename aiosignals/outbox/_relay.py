from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import anyio
from sqlalchemy.exc import SQLAlchemyError

from .._backoff import backoff
from .._delivery import Delivery, delivering
from .._options import check_count, check_seconds
from .._service import Stopper
from .._signal import registry
from ..models import describe_invalid, load_payload, load_sender
from ..repository.sqlalchemy import Database
from ._batch import Batch, Permanent, group_to_mark
from ._progress import BatchProgress
from ._sqlalchemy import SQLAlchemyOutboxStore
from ._wakeup import can_listen, listen

if TYPE_CHECKING:
    from .._receivers import DurableReceiver
    from ._store import OutboxRow, OutboxStore

__all__ = ["OutboxRelay"]

logger = logging.getLogger("aiosignals.outbox")

# How often a relay looks for pending rows of receivers it does not have, to warn of them.
_MISSING_CHECK_SECONDS = 60.0


def _receiver(signal_name: str, dispatch_uid: str) -> DurableReceiver | None:
    """Return the durable receiver of a row, if it is connected in this process."""
    return registry.durable_receiver(signal_name, dispatch_uid)


class OutboxRelay:
    """
    Delivers durable receivers' outbox rows after their transactions committed.

    Delivery is at least once, in commit order per ordering key: the rows of one receiver
    and one key go one after the other, and a row that fails holds back the later rows of
    its key (only) until it is delivered or dead. The key is the entity for a model
    signal, the payload's ``ordering_key`` if it declares one, else the receiver; a
    receiver connected with ``ordering="receiver"`` has one key for all its rows (see
    :meth:`Signal.connect <aiosignals.Signal.connect>`). Rows of different keys are
    delivered side by side, up to *concurrency* at once, and by several relays.

    A failed row (its receiver raised, or ran past *delivery_timeout*) is retried after an
    exponential backoff with jitter, and parked as dead (with its last error) after
    *max_attempts* failures. Rows are claimed with a lease, renewed while the batch runs: a
    relay that dies mid-delivery leaves them to be redelivered once the lease expires. Each
    start of a receiver is counted in the row before the receiver runs, so a row whose
    delivery kills its relay every time is parked as dead after *max_attempts* such deaths,
    while deaths never use up its failures. Outcomes are recorded as rows finish, a few at a
    time: a relay killed mid-batch redoes a handful of rows, never the batch. Several relays
    may share one PostgreSQL database; on SQLite run one.

    Receivers are found by ``dispatch_uid`` among those connected in this process, so the
    process running the relay imports the modules that connect them. Rows of a receiver
    this process does not have are left pending for a relay that has it, with a warning.

    :param db: the database holding the outbox table, or an :class:`OutboxStore` (such as
        a :class:`MemoryOutboxStore` in tests)
    :param batch_size: rows claimed per round trip
    :param concurrency: the most ordering keys whose rows are delivered at once
    :param max_attempts: failures (or deaths of the relay delivering it) before a row is
        parked as dead
    :param lease: seconds a claimed row stays reserved for this relay, renewed every third
        of it while the batch runs: a killed relay's rows go to another relay within about
        this long
    :param poll_interval: seconds :meth:`run` waits when nothing is due; on PostgreSQL
        (asyncpg) a commit that writes outbox rows wakes it at once (LISTEN/NOTIFY)
    :param delivery_timeout: seconds one receiver call may take before it fails with
        :class:`TimeoutError` (retried like any failure). The default, 60 s, is far above
        a mail or webhook call, and bounds how long one hung receiver holds up its relay.
    :param backoff: seconds before the first retry; doubles with each attempt
    :param max_backoff: the longest wait between two attempts
    :param name: this relay's name in the rows it leases (default: host and pid)
    :param clock: returns the time in seconds since the epoch: when rows are due, leases
        run out and retries come. Tests pass one they can move forward, to age leases and
        backoffs without waiting them out.
    :param listen: on PostgreSQL through asyncpg, be woken by commits (LISTEN/NOTIFY);
        ``False`` polls only, as behind a pooler in transaction mode (PgBouncer), where a
        LISTEN is not kept
    :raises TypeError: for a *batch_size*, *max_attempts* or *concurrency* that is not an
        int, a duration that is not a number, a *clock* that is not callable, or a
        *listen* that is not a bool
    :raises ValueError: for a *batch_size*, *max_attempts* or *concurrency* below 1, a
        *lease*, *poll_interval* or *delivery_timeout* that is not a positive finite number, or a
        *backoff* or *max_backoff* that is negative or not finite

    .. versionadded:: 0.1
    .. versionchanged:: 0.2
       Order per ordering key, not per receiver; *concurrency*, *clock*; a store for *db*.
    """

    def __init__(
        self,
        db: Database | OutboxStore,
        *,
        batch_size: int = 100,
        max_attempts: int = 10,
        lease: float = 10.0,
        poll_interval: float = 0.5,
        delivery_timeout: float = 60.0,
        backoff: float = 1.0,
        max_backoff: float = 300.0,
        name: str | None = None,
        clock: Callable[[], float] = time.time,
        concurrency: int = 16,
        listen: bool = True,
    ) -> None:
        for what, count in (
            ("batch_size", batch_size),
            ("max_attempts", max_attempts),
            ("concurrency", concurrency),
        ):
            check_count(count, what=what)
        for what, seconds in (
            ("lease", lease),
            ("delivery_timeout", delivery_timeout),
            ("poll_interval", poll_interval),
        ):
            check_seconds(seconds, what=what)
        for what, seconds in (("backoff", backoff), ("max_backoff", max_backoff)):
            check_seconds(seconds, what=what, zero=True)
        if not callable(clock):
            raise TypeError(f"clock must be a function returning seconds, not {clock!r}")
        if not isinstance(listen, bool):  # pyright: ignore[reportUnnecessaryIsInstance] -- often from untyped config
            raise TypeError(f"listen must be True or False, not {listen!r}")
        self.db: Database | None = db if isinstance(db, Database) else None
        """The database given, or ``None`` for a relay given a store."""
        self.store: OutboxStore = SQLAlchemyOutboxStore(db) if isinstance(db, Database) else db
        """Where the rows are: the outbox table of the database given, or the store given."""
        self.clock = clock
        """Seconds since the epoch: when rows are due and leases run out."""
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.max_attempts = max_attempts
        self.lease = lease
        self.poll_interval = poll_interval
        self.delivery_timeout = delivery_timeout
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.listen = listen
        self._stops = Stopper()
        self._wake: anyio.Event | None = None
        # A commit was notified since the last claim began: the next pause is skipped.
        self._notified = False
        self._lease_until = 0.0
        # The rows in hand and when their delivery_timeout is up (the heartbeat stops
        # renewing the batch's leases past it).
        self._in_hand: dict[int, float] = {}
        self._group_rows = 64  # rows marked as started together; adapts to the receivers
        # Receivers this process does not have (uid -> signal name): their rows are left
        # to other relays, and not claimed again until the receiver is connected here.
        self._missing: dict[str, str] = {}
        self._missing_checked_at = -math.inf
        self._missing_warned: set[str] = set()

    def __repr__(self) -> str:
        return f"OutboxRelay({self.db or self.store!r}, name={self.name!r})"

    @staticmethod
    async def create_table(db: Database) -> None:
        """Create the outbox table if it does not exist (``db.create_all`` does it too)."""
        await SQLAlchemyOutboxStore(db).create_table()

    def stop(self) -> None:
        """Ask :meth:`run` to return once the row in hand is finished."""
        self._stops.stop()

    async def run(self) -> None:
        """
        Deliver due rows until :meth:`stop` is called or the task is cancelled.

        A database that cannot be reached is retried with an exponential backoff (logged,
        at most 30 s apart), so a restart of the database does not end the relay. A
        :meth:`stop` that came before ``run`` makes it return at once; after returning
        the relay may be run again. On PostgreSQL through asyncpg it also listens for the
        commits of outbox rows on a connection of its own, and claims at once instead of
        waiting out *poll_interval*.
        """
        try:
            async with anyio.create_task_group() as group:
                if self.listen and self.db is not None and can_listen(self.db):
                    group.start_soon(listen, self.db, self._on_commit, self.name)
                await self._run_until_stopped()
                group.cancel_scope.cancel()
        except BaseExceptionGroup as error:
            # The listener raises nothing of its own: unwrap what the loop raised.
            if len(error.exceptions) == 1:
                raise error.exceptions[0] from None
            raise
        finally:
            self._stops.reset()

    def _on_commit(self) -> None:
        self._notified = True
        if self._wake is not None:
            self._wake.set()

    async def _run_until_stopped(self) -> None:
        failures = 0
        while not self._stops.stopping:
            self._notified = False
            try:
                finished = await self.run_once()
            except (OSError, SQLAlchemyError) as exc:
                failures += 1
                delay = backoff(failures, base=0.1, cap=30.0)
                logger.warning(
                    "outbox relay %s: the database failed (%s); retrying in %.1f s",
                    self.name,
                    exc,
                    delay,
                )
                await self._pause(delay)
                continue
            failures = 0
            if finished < self.batch_size and not self._notified:
                await self._pause(self.poll_interval)

    async def _pause(self, seconds: float) -> None:
        # Cut short by stop(), and by a commit's notification (PostgreSQL): a stopping
        # relay does not sit out its poll interval, nor does a new row.
        self._wake = anyio.Event()
        with anyio.move_on_after(seconds):
            await self._stops.interruptible(self._wake.wait)
        self._wake = None

    async def run_once(self) -> int:
        """Deliver what is due now, one batch; return how many rows were finished."""
        if self.clock() - self._missing_checked_at >= _MISSING_CHECK_SECONDS:
            self._missing_checked_at = self.clock()
            await self._warn_of_missing_receivers()
        for uid, signal_name in list(self._missing.items()):
            if _receiver(signal_name, uid) is not None:
                del self._missing[uid]  # connected since
        now = self.clock()
        marked: list[int] = []

        def mark(rows: Sequence[OutboxRow]) -> list[int]:
            marked.extend(group_to_mark(rows, 0, self._group_rows, self.max_attempts))
            return marked

        # A claim alone is no attempt: attempts are counted as receivers start.
        rows = await self.store.claim(
            self.name,
            now=now,
            lease=self.lease,
            limit=self.batch_size,
            skip=list(self._missing),
            mark=mark,
        )
        if not rows:
            return 0
        started_at = time.monotonic()
        progress = BatchProgress(self.store, self.name, self._group_rows, marked)
        self._lease_until = now + self.lease
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._keep_leases, [row.id for row in rows])
                await Batch(
                    rows,
                    progress,
                    max_attempts=self.max_attempts,
                    concurrency=self.concurrency,
                    halted=lambda: self._stops.stopping or self.clock() >= self._lease_until,
                    find=self._find,
                    deliver=self._deliver,
                    retry_at=self._retry_at,
                ).run()
                group.cancel_scope.cancel()
        finally:
            self._in_hand.clear()
            # What was never finished (the relay is being cancelled or stopped) is given
            # back at once rather than left leased until the lease expires.
            for row_id in list(progress.marked):
                progress.release(row_id)
            # Shielded: what was delivered must be recorded even when the relay is being
            # cancelled, or it would all be delivered again.
            with anyio.CancelScope(shield=True):
                await progress.write()
            self._group_rows = progress.group_rows
        counts = progress.counts
        logger.info(
            "outbox relay %s: %d rows for %d receivers in %.3f s: %d delivered,"
            " %d retrying, %d dead, %d given back",
            self.name,
            len(rows),
            len({row.dispatch_uid for row in rows}),
            time.monotonic() - started_at,
            counts["delivered"],
            counts["retrying"],
            counts["dead"],
            counts["given back"],
        )
        return counts["delivered"] + counts["retrying"] + counts["dead"]

    async def _keep_leases(self, ids: list[int]) -> None:
        # A batch may take longer than one lease (slow receivers): renew it while the
        # batch runs, or another relay would claim these rows and deliver them too.
        while True:
            await anyio.sleep(self.lease / 3)
            overdue = [i for i, until in self._in_hand.items() if self.clock() > until]
            if overdue:
                # A receiver that ignores its delivery_timeout (a blocking call that cannot
                # be cancelled): the leases run out, and other relays take the rows.
                logger.warning(
                    "outbox relay %s: the receiver of row %s ignores its delivery_timeout"
                    " (%s s); the batch's leases are no longer renewed",
                    self.name,
                    overdue[0],
                    self.delivery_timeout,
                )
                return
            renewed_at = self.clock()
            try:
                await self.store.renew(self.name, ids, renewed_at + self.lease)
            except (OSError, SQLAlchemyError) as exc:
                logger.warning("outbox relay %s could not renew its lease: %s", self.name, exc)
            else:
                self._lease_until = renewed_at + self.lease

    def _find(self, row: OutboxRow) -> DurableReceiver | None:
        target = _receiver(row.signal, row.dispatch_uid)
        if target is None:
            self._missing[row.dispatch_uid] = row.signal
            self._warn_of_missing(row.dispatch_uid, row.signal, row.receiver, 1)
        return target

    async def _deliver(self, row: OutboxRow, target: DurableReceiver) -> None:
        sender = load_sender(row.sender)
        try:
            payload = load_payload(target.signal.payload_type, sender, row.payload)
        except ValueError as exc:
            # The stored payload no longer fits its model: no retry will make it fit.
            raise Permanent(
                f"the stored {describe_invalid(target.signal.payload_type, exc)}"
            ) from exc
        delivery = Delivery(row.id, row.attempts + 1, row.dispatch_uid, self.store.name)
        self._in_hand[row.id] = self.clock() + self.delivery_timeout + self.lease / 3
        try:
            with delivering(delivery), anyio.move_on_after(self.delivery_timeout) as scope:
                # The signal's own timeout and thread settings apply, as in a live send.
                await target.deliver(sender, payload)
        finally:
            self._in_hand.pop(row.id, None)
        if scope.cancelled_caught:
            raise TimeoutError(
                f"the receiver ran past the relay's delivery_timeout ({self.delivery_timeout} s)"
            )

    async def _warn_of_missing_receivers(self) -> None:
        """Warn of the pending rows no receiver of this process can deliver."""
        for pending in await self.store.pending_receivers():
            uid, signal_name = pending.dispatch_uid, pending.signal
            if _receiver(signal_name, uid) is None:
                self._missing[uid] = signal_name
                self._warn_of_missing(uid, signal_name, pending.receiver, pending.count)

    def _warn_of_missing(
        self, uid: str, signal_name: str, receiver: str | None, count: int
    ) -> None:
        if uid in self._missing_warned:
            return  # once per uid: the rows wait, which is not news every poll
        self._missing_warned.add(uid)
        module = receiver.partition(":")[0] if receiver else None
        if module is None or module == "__main__":
            hint = "import the module that connects it (aiosignals relay --app MODULE)"
        else:
            hint = f"import {module}, which connected it (aiosignals relay --app {module})"
        logger.warning(
            "outbox relay %s: %d pending row(s) for dispatch_uid %r (signal %r) wait for a"
            " relay that has that durable receiver; none is connected in this process: %s",
            self.name,
            count,
            uid,
            signal_name,
            hint,
        )

    def _retry_at(self, attempts: int) -> float:
        return self.clock() + backoff(attempts, base=self.backoff, cap=self.max_backoff)
