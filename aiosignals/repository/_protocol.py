from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from .._types import M
from ..exceptions import AiosignalsError

__all__ = ["IntegrityError", "NotFound", "Repository"]


class IntegrityError(AiosignalsError):
    """
    Raised when a write would break a key: ``add`` of an entity whose key is taken.

    The SQLAlchemy backend chains the driver's own error as ``__cause__``.

    .. versionadded:: 0.1
    """


class NotFound(AiosignalsError, LookupError):  # noqa: N818 -- reads as LookupError does
    """
    Raised by ``delete`` when the entity has no row (nothing was sent, nothing deleted).

    .. versionadded:: 0.1
    """


class Repository(Protocol[M]):
    """
    Async persistence of one entity type that sends the model signals around each write.

    ``add`` and ``save`` send :data:`~aiosignals.models.pre_save` before writing (a receiver
    that raises vetoes the write) and :data:`~aiosignals.models.post_save` after it;
    ``delete`` sends ``pre_delete`` and ``post_delete``. The sender is the entity class.
    Each write outside :meth:`transaction` is a transaction of its own.

    .. versionadded:: 0.1
    """

    async def add(self, entity: M) -> M:
        """
        Insert *entity*; assign its key if it is ``None``.

        :raises IntegrityError: if an entity with its key exists
        """
        ...

    async def save(self, entity: M, update_fields: Iterable[str] | None = None) -> M:
        """
        Insert *entity* if it has no row yet, else update it (only *update_fields* if given).

        ``created`` in the payloads tells which happened, also when the caller set the key.
        An update without *update_fields* writes what the entity holds; a field it never
        set (an attribute a mapped class's constructor left out) keeps its stored value.

        :raises ValueError: if *update_fields* names no field of the entity, or names its
            key (as in Django: the key picks the row and is never updated)
        """
        ...

    async def get(self, key: Any) -> M | None:
        """Return the entity with *key*, or ``None``."""
        ...

    async def delete(self, entity: M) -> None:
        """
        Delete *entity*.

        :raises NotFound: if it has no row
        """
        ...

    async def list(self, *, limit: int | None = None, offset: int = 0, **filters: Any) -> list[M]:
        """Return the entities whose fields equal *filters*, by key, paginated."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[Any]:
        """
        Open a transaction (a savepoint inside one) for the writes in the block.

        Receivers connected with ``phase=Phase.AFTER_COMMIT`` run once it commits and
        never if it rolls back; ``Phase.BEFORE_COMMIT`` ones may veto the commit.
        """
        ...
