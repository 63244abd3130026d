"""
The asyncio runner of concurrent stages: plain receivers' coroutines as asyncio tasks.

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

# anyio asks sniffio which library runs, when it is installed (trio depends on it).
_thread_local: Any
_library_cvar: Any
try:
    from sniffio import current_async_library_cvar as _library_cvar
    from sniffio import thread_local as _thread_local
except ModuleNotFoundError:  # pragma: no cover -- no sniffio, no trio: asyncio or nothing
    _thread_local = _library_cvar = None

__all__ = ["on_asyncio", "run_group"]


def on_asyncio() -> bool:
    """
    Return whether the calling code runs on asyncio, as anyio decides it (through sniffio).

    A running asyncio event loop is not enough: trio in guest mode runs on top of one, its
    tasks in the loop's callbacks rather than in asyncio tasks. So an asyncio task must be
    running too, and sniffio (which anyio asks) must not name another library. The cheap
    tests come first; a "no" only costs the anyio path, which works everywhere.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return False
    if asyncio.current_task(loop) is None:
        return False
    if _thread_local is None:
        return True
    name = _thread_local.name or _library_cvar.get()
    return name is None or name == "asyncio"


async def run_group(coroutines: Sequence[Coroutine[Any, Any, Any]]) -> list[Any]:
    """Run the coroutines as tasks of one task group; return their results in order."""
    async with TaskGroup() as group:
        # No await between the creations: every coroutine becomes a task, so none is left
        # un-awaited if the group fails early.
        tasks = [group.create_task(coroutine) for coroutine in coroutines]
    return [task.result() for task in tasks]
