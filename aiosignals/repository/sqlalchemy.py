"""
The SQLAlchemy 2.0 asyncio backend: SQLite through aiosqlite, PostgreSQL through asyncpg.

Needs the ``sqlalchemy`` extra (``postgres`` for asyncpg).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar, cast

try:
    import sqlalchemy as sa
    from sqlalchemy import event, exc
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
    from sqlalchemy.orm import Mapper, make_transient
    from sqlalchemy.orm.attributes import instance_state
    from sqlalchemy.pool import StaticPool
except ImportError as _error:  # pragma: no cover -- exercised by the minimal session
    raise ImportError(
        f'aiosignals.repository.sqlalchemy needs SQLAlchemy: pip install "aiosignals[sqlalchemy]"'
        f" ({_error})"
    ) from _error

import anyio

from .._phases import PhaseScope
from ._base import SignalingRepository
from ._protocol import IntegrityError

if TYPE_CHECKING:
    from types import TracebackType

    from sqlalchemy.ext.asyncio import AsyncEngine

    from .._event import Event
    from .._receivers import ReceiverRecord
    from .._signal import Signal

__all__ = ["Database", "SQLAlchemyRepository"]

M = TypeVar("M")


class Database:
    """
    A database: an SQLAlchemy :class:`~sqlalchemy.ext.asyncio.AsyncEngine` and its transactions.

    :meth:`transaction` opens one transaction for the current task that every repository of
    this database joins; a nested block is a savepoint. Durable receivers' outbox rows are
    written in it, so they commit or roll back with the entities.

    SQLite is set up for what the repositories need: real savepoints, ``BEGIN IMMEDIATE``
    so that concurrent writers queue on the lock instead of failing, and foreign keys on.
    An in-memory SQLite database (``sqlite+aiosqlite://``) is one shared connection, so
    its transactions must not overlap; use a file for concurrent work.

    :param url: an SQLAlchemy URL, e.g. ``sqlite+aiosqlite:///app.db`` or
        ``postgresql+asyncpg://user@host/db``
    :param name: reported as ``using`` in the model signals' payloads
    :param engine_kwargs: passed to :func:`~sqlalchemy.ext.asyncio.create_async_engine`
        (``hide_parameters`` is ``True`` unless given: errors show no statement values)

    .. versionadded:: 0.1
    """

    def __init__(self, url: str | sa.URL, *, name: str = "default", **engine_kwargs: Any) -> None:
        parsed = sa.make_url(url)
        self.url = parsed
        self.name = name
        self.is_sqlite: bool = parsed.get_backend_name() == "sqlite"
        if self.is_sqlite and parsed.database not in (None, "", ":memory:"):
            directory = Path(parsed.database).parent
            if not directory.is_dir():
                # SQLite would only say "unable to open database file", at first use.
                raise FileNotFoundError(
                    f"the directory {str(directory)!r} of the SQLite database does not exist"
                )
        if self.is_sqlite and parsed.database in (None, "", ":memory:"):
            engine_kwargs.setdefault("poolclass", StaticPool)
            engine_kwargs.setdefault("connect_args", {"check_same_thread": False})
        # Errors and logs show statements without their values: payloads may hold personal
        # data, and a relay logs each database error it retries.
        engine_kwargs.setdefault("hide_parameters", True)
        self.engine: AsyncEngine = create_async_engine(parsed, **engine_kwargs)
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._current: ContextVar[AsyncSession | None] = ContextVar(
            f"aiosignals_db_{id(self)}", default=None
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

        async with self.engine.begin() as connection:
            for meta in (*metadata, outbox_metadata):
                await connection.run_sync(meta.create_all)

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()

    def current_session(self) -> AsyncSession | None:
        """Return the session of this task's open transaction, or ``None``."""
        return self._current.get()

    @asynccontextmanager
    async def transaction(self) -> AsyncGenerator[AsyncSession]:
        """
        Open a transaction of this task (a savepoint inside one) and yield its session.

        On leaving the block without an exception BEFORE_COMMIT receivers run (raising rolls
        back), then the commit, then the AFTER_COMMIT receivers in save order; on an
        exception everything rolls back and AFTER_ROLLBACK receivers run.
        """
        session = self._current.get()
        if session is not None:
            savepoint = await session.begin_nested()
            async with PhaseScope.run(
                commit=savepoint.commit, rollback=savepoint.rollback, owner=self
            ):
                yield session
            return
        async with self._sessions() as session:
            await session.begin()
            # fast_acquire: an uncontended write (the usual case) does not yield to the loop.
            session.info[_LOCK] = anyio.Lock(fast_acquire=True)
            token = self._current.set(session)

            def leave() -> None:
                # Before the after-commit (or after-rollback) receivers run: what they
                # write goes into transactions of their own, not into this ended one.
                if self._current.get() is session:
                    self._current.reset(token)

            async def commit() -> None:
                await session.commit()
                leave()

            async def rollback() -> None:
                await session.rollback()
                leave()

            try:
                async with PhaseScope.run(
                    commit=commit, rollback=rollback, durable_sink=self._outbox, owner=self
                ):
                    yield session
            finally:
                leave()

    @asynccontextmanager
    async def session(self) -> AsyncGenerator[AsyncSession]:
        """Yield the open transaction's session, or a short-lived one for reads."""
        current = self._current.get()
        if current is not None:
            async with _lock(current):
                yield current
            return
        async with self._sessions() as session:
            yield session

    async def _outbox(
        self, signal: Signal[Any], record: ReceiverRecord, sender: Any, payload: Event
    ) -> None:
        from ..outbox._table import write_row

        session = self._current.get()
        assert session is not None, "durable rows are written inside a transaction"
        async with _lock(session):
            await write_row(session, signal, record, sender, payload)


_LOCK = "aiosignals_lock"


def _lock(session: AsyncSession) -> anyio.Lock:
    # One session is one connection, and SQLAlchemy forbids two operations on it at
    # once: receivers running concurrently (Concurrent mode, task groups) that write in
    # the same transaction take turns, statement by statement.
    lock: anyio.Lock = session.info[_LOCK]
    return lock


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


class SQLAlchemyRepository(SignalingRepository[M], Generic[M]):
    """
    A repository of a declarative mapped class on a :class:`Database`.

    Entities come back detached, with their columns loaded: plain objects to read, change
    and hand back to :meth:`save`. Writes are explicit statements, so ``update_fields``
    writes exactly those columns, whatever else changed on the object.

    :param model: the mapped class, also the sender of the model signals
    :param db: the database; every repository of one database shares its transactions

    .. versionadded:: 0.1
    """

    def __init__(self, model: type[M], db: Database) -> None:
        mapper = sa.inspect(model, raiseerr=False)
        if mapper is None or not isinstance(mapper, Mapper):
            raise TypeError(f"SQLAlchemyRepository needs a mapped class, not {model!r}")
        if len(mapper.primary_key) != 1:
            raise TypeError(f"{model.__qualname__} must have a single-column primary key")
        self.model = model
        self.db = db
        self.using = db.name
        self._mapper: Mapper[Any] = mapper
        self._table = cast("sa.Table", mapper.local_table)
        self._pk = mapper.primary_key[0]
        self._pk_attr = mapper.get_property_by_column(self._pk).key
        self._columns = {attr.key: attr.columns[0] for attr in mapper.column_attrs}

    def __repr__(self) -> str:
        return f"SQLAlchemyRepository({self.model.__qualname__}, {self.db!r})"

    def transaction(self) -> AbstractAsyncContextManager[AsyncSession]:
        """Open a transaction of the database; see :meth:`Database.transaction`."""
        return self.db.transaction()

    def _open_transaction(self) -> AsyncSession | None:
        return self.db.current_session()

    def _key(self, entity: M) -> Any:
        return getattr(entity, self._pk_attr, None)

    def _fields(self) -> frozenset[str]:
        return frozenset(self._columns)

    async def _exists(self, key: Any, tx: AsyncSession) -> bool:
        async with _lock(tx):
            found = await tx.scalar(sa.select(sa.literal(1)).where(self._pk == key))
        return found is not None

    async def _insert(self, entity: M, tx: AsyncSession) -> None:
        if instance_state(entity).key is not None:
            # A detached object whose row is gone (deleted since it was loaded): insert it
            # anew instead of letting the session mistake it for an update.
            make_transient(entity)
        async with _lock(tx):
            tx.add(entity)
            try:
                await tx.flush()
            except exc.IntegrityError as error:
                # The rollback that follows turns the pending object transient again.
                raise IntegrityError(
                    f"{self.model.__qualname__} could not be inserted: {error.orig}"
                ) from error
            # Detached from here on: the caller's object is a plain value, never flushed
            # again behind the repository's back.
            tx.expunge(entity)

    async def _update(self, entity: M, fields: frozenset[str] | None, tx: AsyncSession) -> None:
        names = [name for name in (fields or self._columns) if name != self._pk_attr]
        values = {self._columns[name]: getattr(entity, name) for name in names}
        if not values:
            return
        try:
            async with _lock(tx):
                await tx.execute(
                    sa.update(self._table).where(self._pk == self._key(entity)).values(values)
                )
        except exc.IntegrityError as error:
            raise IntegrityError(
                f"{self.model.__qualname__} could not be updated: {error.orig}"
            ) from error

    async def _remove(self, key: Any, tx: AsyncSession) -> None:
        async with _lock(tx):
            await tx.execute(sa.delete(self._table).where(self._pk == key))

    async def get(self, key: Any) -> M | None:
        """Return the entity with *key* (detached), or ``None``."""
        async with self.db.session() as session:
            found = await session.get(self.model, key, populate_existing=True)
            if found is not None:
                session.expunge(found)
            return found

    async def list(self, *, limit: int | None = None, offset: int = 0, **filters: Any) -> list[M]:
        """Return the entities (detached) whose columns equal *filters*, by key."""
        unknown = set(filters) - set(self._columns)
        if unknown:
            raise ValueError(f"{self.model.__qualname__} has no columns {sorted(unknown)}")
        query = sa.select(self.model).order_by(self._pk).offset(offset).limit(limit)
        for name, value in filters.items():
            query = query.where(self._columns[name] == value)
        async with self.db.session() as session:
            found = list((await session.scalars(query)).all())
            for entity in found:
                session.expunge(entity)
            return found
