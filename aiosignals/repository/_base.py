from __future__ import annotations

import abc
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Any, Generic

from .._phases import current_scope
from .._types import M
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
from ._protocol import NotFound

__all__ = ["SignalingRepository"]


class SignalingRepository(abc.ABC, Generic[M]):
    """
    The signal protocol of every backend, written once.

    A backend supplies the storage primitives (``_exists``, ``_insert``, ``_update``,
    ``_remove``) and :meth:`transaction`; this class decides ``created``, sends the model
    signals in the right order and keeps each write and its signals in one transaction, so
    that durable receivers' outbox rows commit or roll back with the entity.
    """

    model: type[M]
    using: str

    # -- what a backend provides ---------------------------------------------------------

    @abc.abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Any]:
        """Open a transaction, or a savepoint inside the current one."""

    @abc.abstractmethod
    def _open_transaction(self) -> Any:
        """
        Return the handle of this task's open transaction, or ``None`` if there is none.

        The handle (a session, say) is what :meth:`transaction` yields and what the
        storage primitives take as *tx*.
        """

    def _turn(self, entity: M) -> AbstractAsyncContextManager[None]:
        """
        Return what a write of *entity* holds from start to end; nothing by default.

        A backend whose writes attach the object somewhere (an SQLAlchemy session) makes
        concurrent writes of one object take turns here.
        """
        return _NO_TURN

    def _atomic(self) -> AbstractAsyncContextManager[Any]:
        # Inside an open transaction a write joins it, as Django's save() joins an atomic
        # block: a savepoint per write would cost two statements more each. A failed
        # write makes the transaction rollback-only instead (see TransactionAborted).
        tx = self._open_transaction()
        if tx is not None:
            return _Joined(tx)
        return self.transaction()

    @abc.abstractmethod
    def _key(self, entity: M) -> Any:
        """Return the key of *entity*, or ``None`` if it has none yet."""

    @abc.abstractmethod
    def _key_field(self) -> str:
        """Return the name of the key field."""

    @abc.abstractmethod
    def _fields(self) -> frozenset[str]:
        """Return the names of the stored fields, key included."""

    @abc.abstractmethod
    async def _exists(self, key: Any, tx: Any) -> bool: ...

    @abc.abstractmethod
    async def _insert(self, entity: M, tx: Any) -> None:
        """Write a new row and assign the key; raise IntegrityError if the key is taken."""

    @abc.abstractmethod
    async def _update(self, entity: M, fields: frozenset[str] | None, tx: Any) -> None: ...

    @abc.abstractmethod
    async def _remove(self, key: Any, tx: Any) -> None: ...

    # -- the protocol ---------------------------------------------------------------------

    async def add(self, entity: M) -> M:
        """Insert *entity*; see :class:`~aiosignals.repository.Repository`."""
        async with self._turn(entity), self._atomic() as tx:
            await self._write(entity, tx, created=True, update_fields=None)
        return entity

    async def save(self, entity: M, update_fields: Iterable[str] | None = None) -> M:
        """Insert or update *entity*; see :class:`~aiosignals.repository.Repository`."""
        fields = self._check_fields(update_fields)
        if fields is not None and not fields:
            # As Django: an empty update_fields is a save with nothing to write.
            return entity
        async with self._turn(entity), self._atomic() as tx:
            key = self._key(entity)
            created = key is None or not await self._exists(key, tx)
            if created and fields is not None:
                # As Django: limiting an update to some fields makes no sense for an insert.
                raise NotFound(
                    f"save(update_fields=...) needs an existing row; {self.model.__qualname__}"
                    f" with key {key!r} has none"
                )
            await self._write(entity, tx, created=created, update_fields=fields)
        return entity

    async def delete(self, entity: M) -> None:
        """Delete *entity*; see :class:`~aiosignals.repository.Repository`."""
        key = self._key(entity)
        async with self._turn(entity), self._atomic() as tx:
            if key is None or not await self._exists(key, tx):
                raise NotFound(f"{self.model.__qualname__} with key {key!r} does not exist")
            await pre_delete.send(self.model, PreDelete(instance=entity, using=self.using))
            try:
                await self._remove(key, tx)
            except BaseException as exc:
                _abort(exc)
                raise
            await post_delete.send(self.model, PostDelete(instance=entity, using=self.using))

    async def _write(
        self, entity: M, tx: Any, *, created: bool, update_fields: frozenset[str] | None
    ) -> None:
        # Always sent, also with no receiver: a send that reaches nobody costs about a
        # microsecond against the hundreds a write takes, and tracing or
        # aiosignals.testing.capture() see every save.
        await pre_save.send(
            self.model,
            PreSave(
                instance=entity, created=created, update_fields=update_fields, using=self.using
            ),
        )
        try:
            if created:
                await self._insert(entity, tx)
            else:
                await self._update(entity, update_fields, tx)
        except BaseException as exc:
            _abort(exc)
            raise
        await post_save.send(
            self.model,
            PostSave(
                instance=entity, created=created, update_fields=update_fields, using=self.using
            ),
        )

    def _check_fields(self, update_fields: Iterable[str] | None) -> frozenset[str] | None:
        if update_fields is None:
            return None
        if isinstance(update_fields, str):
            # save(user, "email") would otherwise mean the fields e, m, a, i, l.
            raise TypeError("update_fields takes an iterable of field names, not one string")
        fields = frozenset(update_fields)
        unknown = fields - self._fields()
        if unknown:
            raise ValueError(
                f"update_fields names no field of {self.model.__qualname__}: {sorted(unknown)}"
            )
        key = self._key_field()
        if key in fields:
            # As Django: the key says which row to update; it is never one of its values.
            raise ValueError(
                f"update_fields names the primary key {key!r} of {self.model.__qualname__}:"
                " a save updates the row of that key and cannot change it"
            )
        return fields


class _Joined:
    """The open transaction, joined by a write: ``async with`` hands its handle over."""

    __slots__ = ("tx",)

    def __init__(self, tx: Any) -> None:
        self.tx = tx

    async def __aenter__(self) -> Any:
        return self.tx

    async def __aexit__(self, *_: object) -> None:
        return None


_NO_TURN: AbstractAsyncContextManager[None] = nullcontext()


def _abort(failure: BaseException) -> None:
    # The write itself failed (not a receiver): the transaction it joined can only roll
    # back now, as SQL databases see it too. Receivers that raise do not abort, as in
    # Django, where pre_save and post_save are sent outside the write's atomic block.
    scope = current_scope()
    if scope is not None:
        scope.abort(failure)
