"""
Task-scoped overrides of a signal's receivers: ``muted()`` and ``connected_to()``.

They live in a context variable, so they apply to the task that entered them and the tasks
it starts, and never to a concurrent task. Sends check the module-level :data:`active`
count first, so a program that never uses them pays one integer test per send.
"""

from __future__ import annotations

import contextvars
import functools
import types
from collections.abc import Coroutine, Generator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from ._receivers import ReceiverRecord

__all__ = ["Override", "active", "in_copy", "lookup", "override"]

_T = TypeVar("_T")

active: int = 0
"""How many override blocks are open in any task; zero lets sends skip the lookup."""


@dataclass(frozen=True, slots=True)
class Override:
    """What the current task changes about one signal."""

    mute_all: bool = False
    muted_keys: frozenset[object] = frozenset()
    extra: tuple[ReceiverRecord, ...] = field(default=())


_overrides: ContextVar[dict[int, Override]] = ContextVar("aiosignals_overrides")


def lookup(signal_id: int) -> Override | None:
    """Return the current task's override of the signal with this id, if any."""
    current = _overrides.get(None)
    return None if current is None else current.get(signal_id)


@contextmanager
def override(
    signal_id: int,
    *,
    mute_all: bool = False,
    muted_keys: frozenset[object] = frozenset(),
    extra: tuple[ReceiverRecord, ...] = (),
) -> Generator[None]:
    """Add to the current task's override of a signal for the duration of the block."""
    global active
    current = _overrides.get(None) or {}
    before = current.get(signal_id, Override())
    updated = dict(current)
    updated[signal_id] = Override(
        mute_all=before.mute_all or mute_all,
        muted_keys=before.muted_keys | muted_keys,
        extra=before.extra + extra,
    )
    token = _overrides.set(updated)
    active += 1
    try:
        yield
    finally:
        active -= 1
        _overrides.reset(token)


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
