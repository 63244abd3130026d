"""The shared retry backoff."""

from __future__ import annotations

import pytest

from aiosignals._backoff import backoff


@pytest.mark.parametrize(
    ("attempt", "step"), [(1, 0.1), (2, 0.2), (3, 0.4), (10, 30.0), (10_000, 30.0)]
)
def test_backoff_stays_in_the_upper_half_of_the_capped_step(attempt: int, step: float) -> None:
    """Each wait lies between half the step and the step, the step doubling up to the cap."""
    waits = [backoff(attempt, base=0.1, cap=30.0) for _ in range(200)]
    assert all(step / 2 <= wait <= step for wait in waits)
    assert len(set(waits)) > 1  # jittered, not constant
