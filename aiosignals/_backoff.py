"""Exponential backoff with jitter: the one formula every retry loop of the package uses."""

from __future__ import annotations

import random

__all__ = ["backoff"]


def backoff(attempt: int, *, base: float, cap: float) -> float:
    """
    Return the seconds to wait before retry number *attempt* (1 for the first retry).

    The step doubles from *base* up to *cap*; the wait is drawn from the upper half of the
    step ("equal jitter"): never less than half of it, so a retry still backs off, and
    spread out, so processes that failed together do not retry in step.
    """
    # The exponent is capped so a long outage cannot overflow the float.
    step = min(cap, base * 2.0 ** min(attempt - 1, 60))
    return step / 2 + random.uniform(0, step / 2)  # noqa: S311 -- jitter, not crypto
