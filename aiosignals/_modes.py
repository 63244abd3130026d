from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

__all__ = ["Concurrent", "Mode", "Sequential"]


@dataclass(frozen=True, slots=True)
class Sequential:
    """
    Await the receivers one after another, in priority order.

    .. versionadded:: 0.1
    """


@dataclass(frozen=True, slots=True)
class Concurrent:
    """
    Run the receivers of each priority concurrently, one priority after another.

    All receivers of the highest priority run in one task group; the next priority starts
    only when that group has finished, so a receiver at priority 10 is done before any
    receiver at priority 0 begins.

    :param limit: the most receivers running at once, or ``None`` for no limit

    .. versionadded:: 0.1
    """

    limit: int | None = None

    def __post_init__(self) -> None:
        if self.limit is None:
            return
        if isinstance(self.limit, bool) or not isinstance(self.limit, int):  # pyright: ignore[reportUnnecessaryIsInstance] -- often from untyped config
            raise TypeError(f"Concurrent(limit=...) must be an integer or None, got {self.limit!r}")
        if self.limit < 1:
            raise ValueError(f"Concurrent(limit=...) must be at least 1, got {self.limit}")


Mode: TypeAlias = Sequential | Concurrent
"""How a send runs its receivers."""
