"""Running a receiver in a copy of the sender's context without a task of its own."""

from __future__ import annotations

import contextvars
import functools
import types
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

__all__ = ["in_copy"]

_T = TypeVar("_T")


async def in_copy(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """
    Await *coroutine* in a copy of the current context, without a task of its own.

    A concurrent receiver runs in a copy of the sender's context, as a task would, also when
    the send awaits it directly (a stage of one receiver, a worker of a limited send):
    its ``ContextVar.set`` is seen neither by the sender nor by the next receiver. Each step
    of the coroutine runs inside the copy; what it yields (asyncio futures, trio traps) goes
    to the event loop unchanged, and what the loop sends or throws back goes to it. Most
    receivers finish without suspending: their one step is taken here, and the stepping
    generator is only built for those that do suspend.
    """
    context = contextvars.copy_context()
    try:
        yielded = context.run(coroutine.send, None)
    except StopIteration as stop:
        result: _T = stop.value
        return result
    return await _resume(context, coroutine, yielded)


@types.coroutine
def _resume(
    context: contextvars.Context, coroutine: Coroutine[Any, Any, _T], yielded: Any
) -> Generator[Any, Any, _T]:
    """Go on stepping *coroutine* inside *context* from what its last step *yielded*."""
    while True:
        try:
            sent = yield yielded
        except BaseException as exc:  # noqa: BLE001 -- handed on to the coroutine
            step: Any = functools.partial(coroutine.throw, exc)
        else:
            step = functools.partial(coroutine.send, sent)
        try:
            yielded = context.run(step)
        except StopIteration as stop:
            result: _T = stop.value
            return result
