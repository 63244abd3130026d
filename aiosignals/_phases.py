from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

import anyio

from ._options import Phase
from .exceptions import TransactionAborted

if TYPE_CHECKING:
    from ._types import DurableSink

__all__ = ["DeferredCall", "Phase", "PhaseScope", "current_scope", "shielded"]

logger = logging.getLogger("aiosignals")


DeferredCall = Callable[[bool], Awaitable[Exception | None]]
"""
A receiver call deferred to a phase. Given whether a failure vetoes the commit, it runs
the receiver and returns the failure to raise once the phase's other calls have run.
"""

_current: ContextVar[PhaseScope | None] = ContextVar("aiosignals_phase_scope", default=None)


def current_scope() -> PhaseScope | None:
    """Return the transaction scope of the current task, or ``None`` outside a transaction."""
    return _current.get()


class PhaseScope:
    """
    The receivers deferred to the phases of one transaction (or one savepoint of it).

    A persistence layer opens a scope with :meth:`run` around each transaction; sends made
    inside it defer phased receivers here instead of running them. The scope lives in a
    context variable, so concurrent transactions in other tasks never see its receivers.

    :param durable_sink: writes outbox rows for durable receivers in the same transaction;
        inherited by nested scopes. Without one, durable receivers run after commit.
    """

    __slots__ = ("_deferred", "durable_sink", "enclosing", "failure", "owner", "parent")

    def __init__(
        self,
        *,
        parent: PhaseScope | None = None,
        durable_sink: DurableSink | None = None,
        owner: object = None,
        enclosing: PhaseScope | None = None,
    ) -> None:
        self.parent = parent
        """The enclosing scope of the same owner: this scope is its savepoint."""
        self.owner = owner
        """What the transaction belongs to (a database); scopes of other owners never nest."""
        self.enclosing = enclosing
        """The scope that was current when this one opened, whatever its owner."""
        self.durable_sink: DurableSink | None = (
            durable_sink
            if durable_sink is not None
            else (parent.durable_sink if parent is not None else None)
        )
        self._deferred: list[tuple[Phase, DeferredCall]] = []
        self.failure: BaseException | None = None
        """A write of this transaction that failed: it can only roll back now."""

    def abort(self, failure: BaseException) -> None:
        """Mark the transaction rollback-only: *failure* broke a write that joined it."""
        if self.failure is None:
            self.failure = failure

    def defer(self, phase: Phase, call: DeferredCall) -> None:
        """Queue *call* to run in *phase* of this transaction."""
        self._deferred.append((phase, call))

    async def _run_phase(self, phase: Phase, *, veto: bool) -> None:
        if not self._deferred:
            return
        failures: list[Exception] = []
        for entry_phase, call in self._deferred:
            if entry_phase is not phase:
                continue
            failure = await call(veto)
            if failure is not None:
                failures.append(failure)
        if len(failures) == 1:
            raise failures[0]
        if failures:
            raise ExceptionGroup(f"{len(failures)} {phase.value} receivers failed", failures)

    @contextmanager
    def entered(self) -> Generator[None]:
        """Make this scope the current task's for the block: sends in it defer here."""
        token = _current.set(self)
        try:
            yield
        finally:
            _current.reset(token)

    async def before_commit(self) -> None:
        """
        Run the BEFORE_COMMIT receivers (inside this scope, so their sends join it).

        :raises Exception: the failure of a receiver, which vetoes the commit
        """
        if self.parent is None:
            with self.entered():
                await self._run_phase(Phase.BEFORE_COMMIT, veto=True)

    async def committed(self) -> None:
        """
        Settle a commit.

        A savepoint hands its receivers to its parent; a transaction runs its AFTER_COMMIT
        receivers (shielded, each within its timeout).
        """
        if self.parent is not None:
            self.parent._deferred.extend(self._deferred)
        else:
            await self._settle(Phase.AFTER_COMMIT)
        self._deferred = []

    def adopt(self, savepoint: PhaseScope) -> None:
        """Take over the deferred receivers of *savepoint*, released into this scope."""
        self._deferred.extend(savepoint._deferred)
        savepoint._deferred = []

    async def rolled_back(self) -> None:
        """Settle a rollback: run the AFTER_ROLLBACK receivers (shielded) and drop the rest."""
        try:
            await self._settle(Phase.AFTER_ROLLBACK)
        finally:
            self._deferred = []

    @property
    def pending(self) -> bool:
        """Whether receivers are deferred to this scope (a commit or rollback has work to do)."""
        return bool(self._deferred)

    async def _settle(self, phase: Phase) -> None:
        if not self._deferred:
            # Nothing to run: spare the cancel scope, on every commit of a busy service.
            return
        # After the commit or the rollback the outcome is decided: its receivers run to
        # the end even in a cancelled task (each within its own timeout), so a cancelled
        # request still sends the mail of what it committed, or undoes what it began.
        with anyio.CancelScope(shield=True):
            await self._run_phase(phase, veto=False)

    @classmethod
    @asynccontextmanager
    async def run(
        cls,
        *,
        commit: Callable[[], Awaitable[None]],
        rollback: Callable[[], Awaitable[None]],
        durable_sink: DurableSink | None = None,
        owner: object = None,
        prepare: Callable[[], Awaitable[None]] | None = None,
    ) -> AsyncGenerator[PhaseScope]:
        """
        Run the body as one transaction (or a savepoint, when a scope is already open).

        On success BEFORE_COMMIT receivers run (raising rolls back), then *commit*, then the
        AFTER_COMMIT receivers. A nested scope hands its receivers to the enclosing one
        instead, since only the outermost commit makes them true. On an exception *rollback*
        runs, then the AFTER_ROLLBACK receivers of this scope, and the exception propagates.

        :param commit: commits the transaction (or releases the savepoint)
        :param rollback: rolls the transaction (or savepoint) back
        :param durable_sink: see :class:`PhaseScope`
        :param owner: what the transaction belongs to; scopes nest only within one owner
        :param prepare: awaited inside the scope after the body and again after the
            BEFORE_COMMIT receivers, before *commit* (a session flushes its pending objects
            there, so that the signals of that flush join this transaction)
        """
        enclosing = _current.get()
        # Only a scope of the same owner makes this one a savepoint: a transaction of
        # another database opened inside is a transaction of its own, committed on its own.
        parent = enclosing
        while parent is not None and parent.owner is not owner:
            parent = parent.enclosing
        scope = cls(parent=parent, durable_sink=durable_sink, owner=owner, enclosing=enclosing)
        token = _current.set(scope)
        try:
            try:
                yield scope
                if scope.failure is not None:
                    # A write failed and its error was caught: committing would keep half
                    # of what the block did.
                    raise TransactionAborted(
                        "a write in this transaction failed, so it was rolled back:"
                        f" {scope.failure!r}; wrap a write that may fail in a nested"
                        " transaction() to carry on after it"
                    ) from scope.failure
                if prepare is not None:
                    await prepare()
                if parent is None:
                    # Still inside the scope: what these receivers send joins the transaction.
                    await scope._run_phase(Phase.BEFORE_COMMIT, veto=True)
                    if prepare is not None:
                        await prepare()
            finally:
                _current.reset(token)
            # A cancellation is delivered at the next checkpoint after the receivers.
            await shielded(commit)
        except BaseException as exc:
            await shielded(rollback)
            if isinstance(exc, Exception):
                await scope._settle(Phase.AFTER_ROLLBACK)
            else:
                # A cancellation (or an exit) must go on unchanged: the receivers'
                # failures are logged instead of replacing it.
                try:
                    await scope._settle(Phase.AFTER_ROLLBACK)
                except Exception:
                    logger.exception("AFTER_ROLLBACK receivers of a cancelled transaction failed")
            raise
        if parent is not None:
            parent._deferred.extend(scope._deferred)
        else:
            await scope._settle(Phase.AFTER_COMMIT)


async def shielded(end: Callable[[], Awaitable[None]]) -> None:
    """
    Await *end*, the COMMIT or ROLLBACK of a transaction, to its end even in a cancelled task.

    A COMMIT cut off in flight leaves no way to know whether the database committed: let
    it finish, so that the phase follows what the database did. A ROLLBACK let finish
    gives the connection back clean. A cancellation waits for the task's next checkpoint.

    :param end: commits or rolls back the transaction
    """
    with anyio.CancelScope(shield=True):
        await end()
