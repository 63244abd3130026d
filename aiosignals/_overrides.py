"""
Task-scoped overrides of a signal's receivers: ``muted()`` and ``connected_to()``.

They live in a context variable, so they apply to the task that entered them and the tasks
it starts, and never to a concurrent task. Sends check the module-level :data:`active`
count first, so a program that never uses them pays one integer test per send.
"""

from __future__ import annotations

from collections.abc import Generator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._records import ReceiverRecord

__all__ = ["Override", "active", "lookup", "override"]

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
