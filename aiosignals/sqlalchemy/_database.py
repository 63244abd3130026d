"""A database: an SQLAlchemy ``AsyncEngine``, its sessions and the transactions of each task."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from contextvars import ContextVar, Token
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import anyio
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import StaticPool

from .._phases import PhaseScope
from ._session import govern, instrument, using_info

if TYPE_CHECKING:
    from types import TracebackType

    from .._event import Event
    from .._records import ReceiverRecord
    from .._signal import Signal

__all__ = ["Database", "TaskLock", "statements_lock"]


class Database:
    """
    A database: an SQLAlchemy :class:`~sqlalchemy.ext.asyncio.AsyncEngine` and its transactions.

    :meth:`transaction` opens one transaction for the current task that every repository of
    this database joins; a nested block is a savepoint. Durable receivers' outbox rows are
    written in it, so they commit or roll back with the entities.

    SQLite is set up for what the repositories need: real savepoints, ``BEGIN IMMEDIATE``
    so that concurrent writers queue on the lock instead of failing, and foreign keys on.
    An in-memory SQLite database (``sqlite+aiosqlite://``) is one shared connection: the
    transactions and reads of different tasks take turns on it, one at a time (a task
    that holds a transaction open while it waits for another task's read of the same
    database waits forever); use a file for concurrent work.

    :attr:`sessionmaker` makes instrumented sessions: every flush sends the model signals
    of what it writes (see :func:`~aiosignals.sqlalchemy.instrument`), and inside
    :meth:`transaction` their phases follow the transaction.

    :param url: an SQLAlchemy URL, e.g. ``sqlite+aiosqlite:///app.db`` or
        ``postgresql+asyncpg://user@host/db``, or an existing ``AsyncEngine``, used as it
        is (no SQLite set-up is added to it, and :meth:`dispose` leaves it to its owner)
    :param name: reported as ``using`` in the model signals' payloads
    :param engine_kwargs: passed to :func:`~sqlalchemy.ext.asyncio.create_async_engine`
        (``hide_parameters`` is ``True`` unless given: errors show no statement values)
    :raises TypeError: if engine keyword arguments come with an existing engine

    .. versionadded:: 0.1
    .. versionchanged:: 0.2 accepts an ``AsyncEngine``; :attr:`sessionmaker`
    """

    def __init__(
        self, url: str | sa.URL | AsyncEngine, *, name: str = "default", **engine_kwargs: Any
    ) -> None:
        if isinstance(url, AsyncEngine):
            if engine_kwargs:
                raise TypeError(
                    f"engine options {sorted(engine_kwargs)} cannot apply to an existing engine"
                )
            self._init_engine(url, name=name, owned=False)
            return
        parsed = sa.make_url(url)
        is_sqlite = parsed.get_backend_name() == "sqlite"
        if is_sqlite and parsed.database not in (None, "", ":memory:"):
            directory = Path(parsed.database).parent
            if not directory.is_dir():
                # SQLite would only say "unable to open database file", at first use.
                raise FileNotFoundError(
                    f"the directory {str(directory)!r} of the SQLite database does not exist"
                )
        if is_sqlite and parsed.database in (None, "", ":memory:"):
            engine_kwargs.setdefault("poolclass", StaticPool)
            engine_kwargs.setdefault("connect_args", {"check_same_thread": False})
        # Errors and logs show statements without their values: payloads may hold personal
        # data, and a relay logs each database error it retries.
        engine_kwargs.setdefault("hide_parameters", True)
        engine = create_async_engine(parsed, **engine_kwargs)
        if is_sqlite:
            _configure_sqlite(engine)
        self._init_engine(engine, name=name, owned=True)

    def _init_engine(self, engine: AsyncEngine, *, name: str, owned: bool) -> None:
        self.engine: AsyncEngine = engine
        self.url = engine.url
        self.name = name
        self._owned = owned
        self.is_sqlite: bool = engine.url.get_backend_name() == "sqlite"
        self.sessionmaker: async_sessionmaker[AsyncSession] = instrument(
            async_sessionmaker(engine, expire_on_commit=False, info=using_info(name))
        )
        """
        Makes instrumented sessions of this database: each flush sends the model signals.

        .. versionadded:: 0.2
        """
        # An in-memory database is one connection (StaticPool): a transaction of one task
        # and a read or a transaction of another would share it, and the first rollback
        # or session close would end both. Everything on it takes turns on this lock.
        self._one_connection: anyio.Lock | None = (
            anyio.Lock()
            if self.is_sqlite and engine.url.database in (None, "", ":memory:")
            else None
        )

    def __repr__(self) -> str:
        return f"Database({self.url.render_as_string(hide_password=True)!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.dispose()

    async def create_all(self, *metadata: sa.MetaData) -> None:
        """Create the tables of *metadata* that do not exist yet, and the outbox table."""
        from ..outbox._table import outbox_metadata

        async with self._alone(), self.engine.begin() as connection:
            for meta in (*metadata, outbox_metadata):
                await connection.run_sync(meta.create_all)

    async def dispose(self) -> None:
        """Close every pooled connection of the engine this database created (not of one given)."""
        if self._owned:
            await self.engine.dispose()

    def current_session(self) -> AsyncSession | None:
        """Return the session of this task's open transaction, or ``None``."""
        current = _open_tx(self)
        return None if current is None else current.session

    @asynccontextmanager
    async def _alone(self) -> AsyncGenerator[None]:
        # A whole transaction or read on an in-memory database; nothing elsewhere.
        if self._one_connection is None:
            yield
            return
        async with self._one_connection:
            yield

    @asynccontextmanager
    async def transaction(self) -> AsyncGenerator[AsyncSession]:
        """
        Open a transaction of this task (a savepoint inside one) and yield its session.

        On leaving the block without an exception BEFORE_COMMIT receivers run (raising rolls
        back), then the commit, then the AFTER_COMMIT receivers in save order; on an
        exception everything rolls back and AFTER_ROLLBACK receivers run.
        """
        current = _open_tx(self)
        if current is not None:
            async with self._savepoint(current) as session:
                yield session
            return
        if self._one_connection is not None:
            # Released by leave(), before the phase receivers: theirs are new transactions.
            await self._one_connection.acquire()
        held = self._one_connection
        try:
            async with self.sessionmaker() as session:
                await session.begin()
                govern(session, using=self.name)
                tx = _Tx(session)
                token = _enter(self, tx)

                def leave() -> None:
                    # Before the after-commit (or after-rollback) receivers run: what they
                    # write goes into transactions of their own, not into this ended one.
                    nonlocal held
                    if _open_tx(self) is tx:
                        _open.reset(token)
                    if held is not None:
                        held.release()
                        held = None

                async def commit() -> None:
                    await session.commit()
                    leave()

                async def rollback() -> None:
                    await session.rollback()
                    leave()

                try:
                    async with PhaseScope.run(
                        commit=commit,
                        rollback=rollback,
                        durable_sink=self._outbox,
                        owner=self,
                        prepare=lambda: _flush(tx),
                    ):
                        yield session
                finally:
                    leave()
        finally:
            if held is not None:
                held.release()

    @asynccontextmanager
    async def _savepoint(self, current: _Tx) -> AsyncGenerator[AsyncSession]:
        # One session, one savepoint at a time: two child tasks each opening a savepoint
        # would release or roll back each other's. The savepoint holds the enclosing
        # level's lock for its whole block, so other tasks' savepoints and statements at
        # that level wait for it; statements inside it take a lock of its own.
        async with current.lock:
            savepoint = await current.session.begin_nested()
            inner = _Tx(current.session)
            token = _enter(self, inner)
            try:
                async with PhaseScope.run(
                    commit=savepoint.commit,
                    rollback=savepoint.rollback,
                    owner=self,
                    prepare=lambda: _flush(inner),
                ):
                    yield current.session
            finally:
                _open.reset(token)

    @asynccontextmanager
    async def session(self) -> AsyncGenerator[AsyncSession]:
        """Yield the open transaction's session, or a short-lived one for reads."""
        current = _open_tx(self)
        if current is not None:
            async with current.lock:
                yield current.session
            return
        async with self._alone(), self.sessionmaker() as session:
            yield session

    async def _outbox(
        self, signal: Signal[Any], record: ReceiverRecord, sender: Any, payload: Event
    ) -> None:
        from ..outbox._sqlalchemy import write_row

        current = _open_tx(self)
        assert current is not None, "durable rows are written inside a transaction"
        async with current.lock:
            await write_row(current.session, signal, record, sender, payload)


_open: ContextVar[dict[Database, _Tx]] = ContextVar("aiosignals_open_transactions", default={})  # noqa: B039 -- never mutated, replaced
"""The open transaction (or savepoint) of each database in this task."""


def _open_tx(db: Database) -> _Tx | None:
    return _open.get().get(db)


def _enter(db: Database, tx: _Tx) -> Token[dict[Database, _Tx]]:
    return _open.set({**_open.get(), db: tx})


def statements_lock(db: Database) -> TaskLock:
    """Return the lock the statements of this task's transaction of *db* take turns on."""
    current = _open_tx(db)
    assert current is not None, "statements of a repository run inside a transaction"
    return current.lock


async def _flush(tx: _Tx) -> None:
    # Before the commit (or the savepoint's release), inside the transaction's scope: the
    # model signals of what session.add() left pending join this transaction's phases.
    async with tx.lock:
        await tx.session.flush()


class TaskLock:
    """
    A lock that the task holding it may take again (nested ``async with``).

    The receivers of a flush run inside the task that holds its transaction's lock; one
    that writes through a repository takes it again and must not wait for itself.
    """

    __slots__ = ("_depth", "_lock", "_owner")

    def __init__(self) -> None:
        # fast_acquire: an uncontended write (the usual case) does not yield to the loop.
        self._lock = anyio.Lock(fast_acquire=True)
        self._owner: object = None
        self._depth = 0

    async def __aenter__(self) -> None:
        me = anyio.get_current_task().id
        if self._owner != me:
            await self._lock.acquire()
            self._owner = me
        self._depth += 1

    async def __aexit__(self, *_: object) -> None:
        self._depth -= 1
        if not self._depth:
            self._owner = None
            self._lock.release()


class _Tx:
    """A task's open transaction (or savepoint) of a :class:`Database`: its session and lock."""

    __slots__ = ("lock", "session")

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        # One session is one connection, and SQLAlchemy forbids two operations on it at
        # once: receivers running concurrently (Concurrent mode, task groups) that write
        # in the same transaction take turns, statement by statement.
        self.lock = TaskLock()


def _configure_sqlite(engine: AsyncEngine) -> None:
    # pysqlite's own transaction handling defers BEGIN and breaks SAVEPOINT; SQLAlchemy's
    # documented recipe turns it off and issues BEGIN itself.
    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(connection: Any) -> None:
        # IMMEDIATE takes the write lock up front: two transactions that read then write
        # wait for each other instead of one failing with "database is locked".
        connection.exec_driver_sql("BEGIN IMMEDIATE")
