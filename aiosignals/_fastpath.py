"""
The asyncio-specific path of concurrent sends.

On asyncio, :class:`asyncio.TaskGroup` costs about a quarter of an anyio task group, and a
plain receiver's coroutine can be handed to it without a wrapper. Semantics are the same
as the anyio path (results in order, failures cancel the others and surface as one
:class:`ExceptionGroup`, cancellation propagates), and the same tests run on both. This is
the only module of the core that imports asyncio.
"""

from __future__ import annotations

import asyncio
from asyncio import TaskGroup
from collections.abc import Coroutine, Sequence
from typing import Any

__all__ = ["on_asyncio", "run_group"]


def on_asyncio() -> bool:
    """Return whether the calling code runs on an asyncio event loop."""
    # The private getter is what asyncio's own get_running_loop() wraps; it returns None
    # instead of raising, which keeps the check to one C call on the hot path.
    return asyncio._get_running_loop() is not None


async def run_group(coroutines: Sequence[Coroutine[Any, Any, Any]]) -> list[Any]:
    """Run the coroutines as tasks of one task group; return their results in order."""
    async with TaskGroup() as group:
        # No await between the creations: every coroutine becomes a task, so none is left
        # un-awaited if the group fails early.
        tasks = [group.create_task(coroutine) for coroutine in coroutines]
    return [task.result() for task in tasks]
