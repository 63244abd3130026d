"""The repository of a mapped class on a :class:`~aiosignals.sqlalchemy.Database`."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Generic, cast

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.orm import Mapper, make_transient
from sqlalchemy.orm.attributes import instance_state

from .._types import M
from ..repository._base import SignalingRepository
from ..repository._protocol import IntegrityError
from ._database import Database, TaskLock, statements_lock
from ._session import unsignalled

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ["SQLAlchemyRepository"]


_TURN = "aiosignals_turn"
"""The key of an entity's write lock in its SQLAlchemy instance state's ``info``."""


class SQLAlchemyRepository(SignalingRepository[M], Generic[M]):
    """
    A repository of a declarative mapped class on a :class:`Database`.

    Entities come back detached, with their columns loaded: plain objects to read, change
    and hand back to :meth:`save`. Writes are explicit statements, so ``update_fields``
    writes exactly those columns, whatever else changed on the object. An update without
    ``update_fields`` writes the columns the object holds (set, loaded, or given by its
    constructor, as a mapped dataclass's defaults are): saving a fresh ``User(id=42,
    name="x")`` over a stored row changes ``name`` and keeps every other column as it
    was; an insert applies the column defaults to what the object does not hold.

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

    def _turn(self, entity: M) -> AbstractAsyncContextManager[None]:
        # An object is in at most one session at a time: tasks saving the same object
        # at once take turns (the first inserts, the next ones update), where SQLAlchemy
        # would refuse them with "already attached to session". The turn is re-entrant
        # for its task, so an AFTER_COMMIT receiver that saves the object again runs.
        state = instance_state(entity)
        turn: TaskLock | None = state.info.get(_TURN)
        if turn is None:
            turn = state.info[_TURN] = TaskLock()
        return turn

    def _key(self, entity: M) -> Any:
        return getattr(entity, self._pk_attr, None)

    def _key_field(self) -> str:
        return self._pk_attr

    def _fields(self) -> frozenset[str]:
        return frozenset(self._columns)

    async def _exists(self, key: Any, tx: AsyncSession) -> bool:
        async with statements_lock(self.db):
            found = await tx.scalar(sa.select(sa.literal(1)).where(self._pk == key))
        return found is not None

    async def _insert(self, entity: M, tx: AsyncSession) -> None:
        if instance_state(entity).key is not None:
            # A detached object whose row is gone (deleted since it was loaded): insert it
            # anew instead of letting the session mistake it for an update.
            make_transient(entity)
        async with statements_lock(self.db):
            # The repository sends this write's signals itself (with what it knows:
            # update_fields, vetoes before any SQL), not the session's flush.
            unsignalled(tx, entity)
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
        if fields is None:
            # Only what the object holds (set, loaded or given by its constructor): a
            # column it never set keeps its stored value instead of becoming NULL.
            held = vars(entity)
            fields = frozenset(name for name in self._columns if name in held)
        values = {
            self._columns[name]: getattr(entity, name) for name in fields if name != self._pk_attr
        }
        if not values:
            return
        try:
            async with statements_lock(self.db):
                await tx.execute(
                    sa.update(self._table).where(self._pk == self._key(entity)).values(values)
                )
        except exc.IntegrityError as error:
            raise IntegrityError(
                f"{self.model.__qualname__} could not be updated: {error.orig}"
            ) from error

    async def _remove(self, key: Any, tx: AsyncSession) -> None:
        async with statements_lock(self.db):
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
