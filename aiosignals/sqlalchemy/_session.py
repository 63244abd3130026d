"""
Model signals from the flushes of instrumented SQLAlchemy sessions.

SQLAlchemy's session events are synchronous, but a flush started from an ``AsyncSession``
runs in a greenlet that SQLAlchemy's bridge (``await_``) lets hand a coroutine back to the
event loop: the receivers are awaited from inside the flush, in the task's own context
(the greenlet shares it), so their sends see the task's transaction scope.

Only sessions of an instrumented sessionmaker are touched: :func:`instrument` gives the
sessionmaker a subclass of its sync session class and listens on that subclass alone, and
a subclass of its ``AsyncSession`` class whose commit lets a COMMIT in flight finish in a
cancelled task, so that the phase that runs is the one the database decided.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Set
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    AsyncSessionTransaction,
    async_session,
    async_sessionmaker,
)
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker
from sqlalchemy.orm.attributes import instance_state

try:  # SQLAlchemy 2.1 renamed await_only (kept as an alias, deprecated in 2.2).
    from sqlalchemy.util import await_
except ImportError:  # pragma: no cover -- SQLAlchemy 2.0
    from sqlalchemy.util import await_only as await_

from .._observers import observed
from .._phases import PhaseScope, shielded
from ..exceptions import NestedFlushError, RecursionDepthError
from ..models import (
    PostDelete,
    PostSave,
    PreDelete,
    PreSave,
    post_delete,
    post_save,
    pre_delete,
    pre_save,
)

if TYPE_CHECKING:
    from .._event import Event
    from .._records import ReceiverRecord
    from .._signal import Signal

__all__ = ["govern", "instrument", "is_instrumented", "unsignalled", "using_info"]

S = TypeVar("S", bound=AsyncSession)

# Keys of the per-session (and per-object) state kept in SQLAlchemy's ``info`` dicts.
_GOVERNED = "aiosignals_governed"  # a Database transaction runs the phases of this session
_USING = "aiosignals_using"  # the name reported as ``using``
_SCOPES = "aiosignals_scopes"  # SessionTransaction -> PhaseScope, for app-driven commits
_COMMITTED = "aiosignals_committed"  # SessionTransactions whose COMMIT (or RELEASE) happened
_POST = "aiosignals_post"  # the post_save / post_delete sends of the flush under way
_CHAIN = "aiosignals_chain"  # flushes in a row whose post_save receivers changed the session
_QUIET = "aiosignals_quiet"  # ids of objects whose write the repository signals itself
_SHIELD = "aiosignals_shield"  # the cancel scope of an app's commit, shielded for the COMMIT


class _Instrumented:
    """Marks the sync session classes that :func:`instrument` made."""


_classes: dict[type[Session], type[Session]] = {}
_NONE: frozenset[int] = frozenset()


def is_instrumented(maker: async_sessionmaker[Any]) -> bool:
    """Return whether the sessions of *maker* send model signals."""
    base = maker.kw.get("sync_session_class") or maker.class_.sync_session_class
    return issubclass(base, _Instrumented)


def instrument(maker: async_sessionmaker[S]) -> async_sessionmaker[S]:
    """
    Make every flush of the sessions of *maker* send the model signals; return *maker*.

    For each object a flush writes, ``pre_save`` is sent before its SQL (a receiver may
    change the object, and the change is written) and ``post_save`` after it, in the same
    transaction; ``pre_delete`` / ``post_delete`` around deletes. Receivers are awaited.
    Phases bind to the session's transaction, also when the application commits it.
    Bulk statements (``session.execute(update(...))``) send nothing, as Django's
    ``QuerySet.update()`` does not. Instrumenting twice changes nothing.

    :param maker: an :class:`~sqlalchemy.ext.asyncio.async_sessionmaker`
    :return: *maker* itself, instrumented
    :raises TypeError: if *maker* is not an ``async_sessionmaker`` (a sync ``sessionmaker``,
        an engine, a session)

    .. versionadded:: 0.2
    """
    # Checked at run time: the argument often comes from untyped code.
    if not isinstance(maker, async_sessionmaker):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise TypeError(_what_to_pass(maker))
    if not issubclass(maker.class_, _PhasedSession):
        maker.class_ = _phased_class(maker.class_)
    if is_instrumented(maker):
        return maker
    base: type[Session] = maker.kw.get("sync_session_class") or maker.class_.sync_session_class
    maker.kw["sync_session_class"] = _instrumented_class(base)
    return maker


def _what_to_pass(given: object) -> str:
    hint = "instrument() takes an async_sessionmaker, e.g. instrument(async_sessionmaker(engine))"
    if isinstance(given, sessionmaker):
        return f"{hint}: a sync sessionmaker's sessions cannot await receivers"
    if isinstance(given, AsyncEngine | sa.Engine):
        return f"{hint}, not the engine itself"
    if isinstance(given, AsyncSession | Session):
        return f"{hint}, not a session: instrument the sessionmaker that makes it"
    return f"{hint}, not {given!r}"


def _instrumented_class(base: type[Session]) -> type[Session]:
    cls = _classes.get(base)
    if cls is None:
        cls = type(f"Instrumented{base.__name__}", (base, _Instrumented), {})
        # Listeners on our own subclass only: sessions nobody instrumented never see them.
        event.listen(cls, "before_flush", _before_flush)
        event.listen(cls, "after_flush", _after_flush)
        event.listen(cls, "after_flush_postexec", _after_flush_postexec)
        event.listen(cls, "before_commit", _before_commit)
        event.listen(cls, "after_commit", _after_commit)
        event.listen(cls, "after_transaction_end", _after_transaction_end)
        _classes[base] = cls
    return cls


_async_classes: dict[type[AsyncSession], type[AsyncSession]] = {}


def _phased_class(base: type[S]) -> type[S]:
    cls = _async_classes.get(base)
    if cls is None:
        # _PhasedSession first: its methods wrap those of *base*, an application's own
        # AsyncSession subclass included (the MRO puts *base* right after it).
        cls = type(f"Instrumented{base.__name__}", (_PhasedSession, base), {})
        _async_classes[base] = cls
    phased: type[S] = cls  # type: ignore[assignment]  # a subclass of base, made above
    return phased


class _PhasedSession(AsyncSession):
    """
    Ends the transactions the application ends itself as :meth:`Database.transaction` does.

    The flush and the BEFORE_COMMIT receivers may be cancelled; then the COMMIT is let
    finish in a cancelled task (shielded, as ``Database.transaction`` shields its own),
    so that AFTER_COMMIT runs if the database committed and AFTER_ROLLBACK if it did not,
    and the cancellation is raised once the receivers have run. A ROLLBACK, and the one
    of ``close()``, is let finish alike (:func:`~aiosignals._phases.shielded`).
    """

    async def commit(self) -> None:
        """Commit the transaction; a cancellation meanwhile is raised once it has ended."""
        await _committed(self, super().commit)

    async def rollback(self) -> None:
        """Roll the transaction back; a cancellation meanwhile is raised once it has ended."""
        await _ended(self, super().rollback)

    async def close(self) -> None:
        """Close the session; a cancellation meanwhile is raised once its ROLLBACK has ended."""
        if not self.sync_session.in_transaction():
            # Nothing to roll back (the usual close, after a commit): spare the shield.
            await super().close()
            return
        await _ended(self, super().close)

    def begin(self) -> AsyncSessionTransaction:
        """Return the transaction of ``async with session.begin():``, ended as :meth:`commit`."""
        return _PhasedTransaction(self)


class _PhasedTransaction(AsyncSessionTransaction):
    """The transaction of ``session.begin()``: ended as :meth:`_PhasedSession.commit`."""

    async def commit(self) -> None:
        """Commit the transaction; a cancellation meanwhile is raised once it has ended."""
        await _committed(self.session, super().commit)

    async def rollback(self) -> None:
        """Roll the transaction back; a cancellation meanwhile is raised once it has ended."""
        await _ended(self.session, super().rollback)

    async def __aexit__(self, type_: Any, value: Any, traceback: Any) -> None:
        end = functools.partial(super().__aexit__, type_, value, traceback)
        if type_ is None:
            await _committed(self.session, end)
        else:
            await _ended(self.session, end)


async def _committed(session: AsyncSession, commit: Callable[[], Awaitable[None]]) -> None:
    info = session.sync_session.info
    if info.get(_GOVERNED):
        await commit()  # inside Database.transaction(), which shields it itself
        return
    # One greenlet for the flush, the BEFORE_COMMIT receivers and the COMMIT (a second
    # one would cost each commit as much again as instrumenting): _before_commit shields
    # this scope once the receivers have run, so only the COMMIT is not cancelled.
    with anyio.CancelScope() as scope:
        info[_SHIELD] = scope
        try:
            await commit()
        finally:
            info.pop(_SHIELD, None)
    # The phase's receivers ran inside the commit: now the cancellation.
    await anyio.lowlevel.checkpoint_if_cancelled()


async def _ended(session: AsyncSession, end: Callable[[], Awaitable[None]]) -> None:
    await shielded(end)
    # The phase's receivers ran inside the rollback: now the cancellation. Inside
    # Database.transaction() (itself shielded there) this is no checkpoint.
    await anyio.lowlevel.checkpoint_if_cancelled()


def govern(session: AsyncSession, *, using: str) -> None:
    """
    Hand the phases of *session*'s transaction to the caller's :class:`PhaseScope`.

    A :class:`~aiosignals.sqlalchemy.Database` transaction runs its phases itself; its
    session then only sends, deferring into the scope of the task.
    """
    session.sync_session.info[_GOVERNED] = True
    session.sync_session.info[_USING] = using


def using_info(using: str) -> dict[str, Any]:
    """Return the ``info`` of a sessionmaker whose sessions report *using* in the payloads."""
    return {_USING: using}


def unsignalled(session: AsyncSession, entity: object) -> None:
    """Leave the next flush of *entity* in *session* to its caller, which signals it itself."""
    # Kept on the session, not the object: reading an object's state.info would allocate
    # a dict per object on every flush.
    session.sync_session.info.setdefault(_QUIET, set()).add(id(entity))


# -- sending from inside the flush ------------------------------------------------------


def _wanted(signal: Signal[Any], obj: object) -> bool:
    # A flush with nobody listening sends nothing: no payload is built and no coroutine
    # crosses the greenlet bridge (the instrumented session's cost with no receiver).
    # Observers (tracing, aiosignals.testing.capture) see every send, as for repositories.
    return signal.has_receivers_for(type(obj)) or observed()


def _using(session: Session) -> str:
    using: str = session.info.get(_USING, "default")
    return using


def _send(session: Session, send: Callable[[], Awaitable[Any]]) -> None:
    """Await *send* from inside a flush, in the scope of the session's transaction."""
    await_(_sending(session, send))


async def _sending(session: Session, send: Callable[[], Awaitable[Any]]) -> None:
    scope = None if session.info.get(_GOVERNED) else _scope(session)
    try:
        if scope is None:
            await send()
        else:
            with scope.entered():
                await send()
    except sa_exc.InvalidRequestError as error:
        if "already flushing" not in str(error):
            raise
        raise NestedFlushError(
            "a model signal receiver flushed (or committed) the session that is flushing"
            " it; add objects with session.add() and let this flush or the commit write"
            " them, or write through another session"
        ) from error


def _scope(session: Session) -> PhaseScope | None:
    """Return the scope of the session's innermost transaction, created on first use."""
    transaction = session.get_nested_transaction() or session.get_transaction()
    return None if transaction is None else _scope_of(session, transaction)


def _scope_of(session: Session, transaction: SessionTransaction) -> PhaseScope:
    scopes: dict[SessionTransaction, PhaseScope] = session.info.setdefault(_SCOPES, {})
    scope = scopes.get(transaction)
    if scope is None:
        parent = transaction.parent
        while parent is not None and not parent.nested and parent.parent is not None:
            parent = parent.parent
        scope = PhaseScope(
            parent=None if parent is None else _scope_of(session, parent),
            durable_sink=functools.partial(_write_outbox_row, session),
            owner=session,
        )
        scopes[transaction] = scope
    return scope


async def _write_outbox_row(
    session: Session, signal: Signal[Any], record: ReceiverRecord, sender: Any, payload: Event
) -> None:
    """Write a durable receiver's outbox row in *session*'s transaction (the scope's sink)."""
    from ..outbox._sqlalchemy import write_row

    proxy = async_session(session)
    assert proxy is not None, "instrumented sessions are made by an async_sessionmaker"
    await write_row(proxy, signal, record, sender, payload)


def _changes(obj: object) -> tuple[frozenset[str], dict[str, Any]]:
    """Return the column attributes of *obj* that changed, and their values before."""
    state = instance_state(obj)
    fields: set[str] = set()
    previous: dict[str, Any] = {}
    for attr in state.mapper.column_attrs:
        history = state.attrs[attr.key].history
        if history.has_changes():
            fields.add(attr.key)
            previous[attr.key] = history.deleted[0] if history.deleted else None
    return frozenset(fields), previous


def _before_flush(session: Session, flush_context: Any, instances: Any) -> None:
    chain: int = session.info.get(_CHAIN, 0)
    if chain >= post_save.max_depth:
        session.info[_CHAIN] = 0
        raise RecursionDepthError(
            f"post_save receivers added or changed objects in {chain} flushes in a row"
            f" (max_depth={post_save.max_depth}): a receiver keeps causing the write"
            " that sends it again"
        )
    using = _using(session)
    quiet: Set[int] = session.info.get(_QUIET, _NONE)
    seen: set[int] = set()
    # Receivers may add, change or delete objects: they are part of this flush, so the
    # new ones get their pre_ signals too, until a pass sends nothing.
    while True:
        sent = False
        new = session.new
        for obj in new:
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if id(obj) in quiet or not _wanted(pre_save, obj):
                continue
            payload: PreSave[Any] = PreSave(instance=obj, created=True, using=using)
            _send(session, functools.partial(pre_save.send, type(obj), payload))
            sent = True
        for obj in session.dirty:
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if (
                id(obj) in quiet
                or not _wanted(pre_save, obj)
                or not session.is_modified(obj, include_collections=False)
            ):
                continue
            payload = PreSave(
                instance=obj, created=False, update_fields=_changes(obj)[0], using=using
            )
            _send(session, functools.partial(pre_save.send, type(obj), payload))
            sent = True
        for obj in session.deleted:
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if id(obj) in quiet or not _wanted(pre_delete, obj):
                continue
            gone: PreDelete[Any] = PreDelete(instance=obj, using=using)
            _send(session, functools.partial(pre_delete.send, type(obj), gone))
            sent = True
        if not sent:
            return


def _after_flush(session: Session, flush_context: Any) -> None:
    # The history of each attribute is still there (it is reset after this event): what
    # each write changed is read now and sent once the flush is complete.
    using = _using(session)
    quiet: Set[int] = session.info.pop(_QUIET, _NONE)
    sends: list[PostSave[Any] | PostDelete[Any]] = []
    for obj in session.new:
        if id(obj) in quiet or not _wanted(post_save, obj):
            continue
        sends.append(PostSave(instance=obj, created=True, using=using))
    for obj in session.dirty:
        if (
            id(obj) in quiet
            or not _wanted(post_save, obj)
            or not session.is_modified(obj, include_collections=False)
        ):
            continue
        fields, previous = _changes(obj)
        sends.append(
            PostSave(
                instance=obj, created=False, update_fields=fields, previous=previous, using=using
            )
        )
    for obj in session.deleted:
        if id(obj) in quiet or not _wanted(post_delete, obj):
            continue
        sends.append(PostDelete(instance=obj, using=using))
    if sends:
        session.info.setdefault(_POST, []).extend(sends)


def _after_flush_postexec(session: Session, flush_context: Any) -> None:
    sends: list[PostSave[Any] | PostDelete[Any]] = session.info.pop(_POST, [])
    for payload in sends:
        instance: object = payload.instance
        sender = type(instance)
        if isinstance(payload, PostSave):
            _send(session, functools.partial(post_save.send, sender, payload))
        else:
            _send(session, functools.partial(post_delete.send, sender, payload))
    # Objects the receivers added or changed are flushed next (the commit flushes until
    # the session is clean): count such flushes in a row against max_depth.
    if sends and (session.new or session.dirty or session.deleted):
        session.info[_CHAIN] = session.info.get(_CHAIN, 0) + 1
    else:
        session.info[_CHAIN] = 0


# -- phases of transactions the application commits itself -----------------------------


def _before_commit(session: Session) -> None:
    if session.info.get(_GOVERNED):
        return
    if session.get_nested_transaction() is not None:
        # SQLAlchemy fires this for a savepoint's RELEASE too; that is no COMMIT, and the
        # savepoint's deferred receivers go to its parent (_after_commit, at its end).
        return
    # The commit flushes after this event: flush first, so that the BEFORE_COMMIT
    # receivers of what it writes run before the COMMIT too.
    session.flush()
    transaction = session.get_transaction()
    scopes: dict[SessionTransaction, PhaseScope] = session.info.get(_SCOPES, {})
    scope = scopes.get(transaction) if transaction is not None else None
    if scope is not None and scope.pending:
        await_(scope.before_commit())
        session.flush()  # what the receivers added, with its signals, still cancellable
    shield: anyio.CancelScope | None = session.info.get(_SHIELD)
    if shield is not None:
        # What follows is the COMMIT: let it finish in a cancelled task (_committed).
        shield.shield = True


def _after_commit(session: Session) -> None:
    # Fired for a transaction and for a savepoint's RELEASE alike, while it is still the
    # session's innermost one; its end (after_transaction_end) follows.
    if not session.info.get(_SCOPES):
        return  # no receiver deferred anything: nothing to settle at the end
    transaction = session.get_nested_transaction() or session.get_transaction()
    if transaction is not None:
        session.info.setdefault(_COMMITTED, set()).add(transaction)


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    info = session.info
    if not (info.get(_SCOPES) or info.get(_POST) or info.get(_CHAIN) or info.get(_QUIET)):
        return  # the common case: nothing of ours is attached to this transaction
    # A flush that failed never reached after_flush: forget the ids it was to skip.
    info.pop(_QUIET, None)
    committed_set: set[SessionTransaction] = session.info.get(_COMMITTED, set())
    committed = transaction in committed_set
    committed_set.discard(transaction)
    if not committed:
        # Rolled back, or closed without a commit: what it flushed is gone.
        session.info.pop(_POST, None)
    if transaction.parent is None:
        session.info[_CHAIN] = 0
    scopes: dict[SessionTransaction, PhaseScope] = session.info.get(_SCOPES, {})
    scope = scopes.pop(transaction, None)
    if scope is None:
        return
    if committed and scope.parent is not None:
        # A savepoint's release: its receivers become its parent's, no await needed.
        scope.parent.adopt(scope)
    elif scope.pending:
        await_(scope.committed() if committed else scope.rolled_back())
