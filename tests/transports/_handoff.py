"""The scenario the task-queue hand-off tests share: one order rolled back, one committed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from aiosignals import Signal
    from aiosignals.repository.sqlalchemy import Database


async def roll_back_then_commit(
    db: Database, order_placed: Signal[Any], before_commit: Callable[[], Awaitable[None]]
) -> None:
    """Send order 1 in a transaction that rolls back, then order 2 in one that commits."""
    with pytest.raises(LookupError):
        async with db.transaction():
            await order_placed.send(None, order_id=1)
            raise LookupError
    async with db.transaction():
        await order_placed.send(None, order_id=2)
        await before_commit()  # Still inside: nothing may be enqueued yet.
