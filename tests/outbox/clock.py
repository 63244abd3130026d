"""A clock for the relay's ``clock=`` that moves only when a test moves it."""

from __future__ import annotations

import time


class Clock:
    """Seconds since the epoch, frozen at *now* (default: the real time at creation)."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock *seconds* forward."""
        self.now += seconds
