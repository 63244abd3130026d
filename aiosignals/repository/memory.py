from __future__ import annotations

import copy
import dataclasses
import itertools
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any, TypeAlias

from pydantic import BaseModel

from .._phases import PhaseScope
from .._types import M
from ._base import SignalingRepository
from ._protocol import IntegrityError

__all__ = ["MemoryRepository"]


_MISSING: Any = object()

# The undo log of the innermost open memory transaction of this task. One log serves every
# MemoryRepository, so a transaction spans all of them, as a database transaction spans
# its tables; each task has its own, so concurrent transactions never undo each other.
_UndoLog: TypeAlias = list[tuple[dict[Any, Any], Any, Any, Any]]
"""(rows, key, the value before, the value written) of each write of a transaction."""

_undo_log: ContextVar[_UndoLog | None] = ContextVar("aiosignals_memory_undo", default=None)


class MemoryRepository(SignalingRepository[M]):
    """
    A repository that keeps entities in a dict: for tests, prototypes and the quick start.

    Entities are pydantic models or dataclasses keyed by the attribute *key*; an integer
    is assigned when it is ``None``. Stored entities are copies, so changing an object
    without saving it changes nothing stored, as with a database. Transactions are real:
    a rolled-back block undoes its writes and runs no after-commit receiver. Isolation is
    that of a dict, "read uncommitted": other tasks see a transaction's writes before it
    commits, and a rollback leaves alone a row that another task has written since.

    :param model: the entity class, also the sender of the model signals
    :param key: the name of the key attribute
    :param using: the store name reported in the payloads' ``using``

    .. versionadded:: 0.1
    """

    def __init__(self, model: type[M], *, key: str = "id", using: str = "memory") -> None:
        if issubclass(model, BaseModel):
            fields = frozenset(model.model_fields)
        elif dataclasses.is_dataclass(model):
            fields = frozenset(f.name for f in dataclasses.fields(model))
        else:
            raise TypeError(f"MemoryRepository keeps pydantic models or dataclasses, not {model!r}")
        if key not in fields:
            raise ValueError(f"{model.__qualname__} has no key field {key!r}")
        self.model = model
        self.key = key
        self.using = using
        self._field_names = fields
        self._rows: dict[Any, M] = {}
        self._ids = itertools.count(1)

    @asynccontextmanager
    async def transaction(self) -> AsyncGenerator[list[Any]]:
        """Open a transaction (a savepoint inside one); see :class:`Repository`."""
        parent = _undo_log.get()
        log: _UndoLog = []

        token = _undo_log.set(log)

        def leave() -> None:
            # Before the phase receivers run: their writes belong to the enclosing
            # transaction, or to none, not to this ended one.
            if _undo_log.get() is log:
                _undo_log.reset(token)

        async def commit() -> None:
            leave()
            # A savepoint's changes become the enclosing transaction's to undo.
            if parent is not None:
                parent.extend(log)

        async def rollback() -> None:
            leave()
            for rows, key, previous, written in reversed(log):
                # Undo only what is still this transaction's: a row another task wrote
                # since then is theirs, and their commit stands.
                if rows.get(key, _MISSING) is not written:
                    continue
                if previous is _MISSING:
                    rows.pop(key, None)
                else:
                    rows[key] = previous

        try:
            async with PhaseScope.run(commit=commit, rollback=rollback, owner=_undo_log):
                yield log
        finally:
            leave()

    def _open_transaction(self) -> Any:
        return _undo_log.get()

    def _store(self, key: Any, value: Any) -> None:
        # Every write goes through here: the undo log of an open transaction keeps what
        # was there before and what this write put there.
        log = _undo_log.get()
        if log is not None:
            log.append((self._rows, key, self._rows.get(key, _MISSING), value))
        if value is _MISSING:
            del self._rows[key]
        else:
            self._rows[key] = value

    def _key(self, entity: M) -> Any:
        return getattr(entity, self.key)

    def _key_field(self) -> str:
        return self.key

    def _fields(self) -> frozenset[str]:
        return self._field_names

    async def _exists(self, key: Any, tx: Any) -> bool:
        return key in self._rows

    async def _insert(self, entity: M, tx: Any) -> None:
        key = self._key(entity)
        if key is None:
            key = next(k for k in self._ids if k not in self._rows)
            # Frozen pydantic models and frozen dataclasses get their key all the same.
            object.__setattr__(entity, self.key, key)
        elif key in self._rows:
            raise IntegrityError(f"{self.model.__qualname__} with key {key!r} exists")
        self._store(key, copy.deepcopy(entity))

    async def _update(self, entity: M, fields: frozenset[str] | None, tx: Any) -> None:
        key = self._key(entity)
        if fields is None:
            self._store(key, copy.deepcopy(entity))
            return
        stored = copy.deepcopy(self._rows[key])
        for name in fields:
            object.__setattr__(stored, name, copy.deepcopy(getattr(entity, name)))
        self._store(key, stored)

    async def _remove(self, key: Any, tx: Any) -> None:
        self._store(key, _MISSING)

    async def get(self, key: Any) -> M | None:
        """Return a copy of the entity with *key*, or ``None``."""
        found = self._rows.get(key)
        return None if found is None else copy.deepcopy(found)

    async def list(self, *, limit: int | None = None, offset: int = 0, **filters: Any) -> list[M]:
        """Return copies of the entities whose fields equal *filters*, by key."""
        unknown = set(filters) - self._field_names
        if unknown:
            raise ValueError(f"{self.model.__qualname__} has no fields {sorted(unknown)}")
        found = [
            entity
            for _, entity in sorted(self._rows.items(), key=lambda item: item[0])
            if all(getattr(entity, name) == value for name, value in filters.items())
        ]
        end = None if limit is None else offset + limit
        return [copy.deepcopy(entity) for entity in found[offset:end]]
