"""
The options that decide how a send runs its receivers: mode, error policy, timeout.

Each is checked here when it is given (at ``Signal()``, ``connect()`` or ``send()``), so a
bad value is an error at the first moment it is known rather than a failure at every
send. The error policies themselves (``"raise"``, ``"collect"``, ``"log"``) are applied
by :func:`report` and the send loops of :mod:`aiosignals._signal`.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any, Final

from ._modes import Concurrent, Sequential

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._modes import Mode
    from ._types import ErrorPolicy

__all__ = ["POLICIES", "check_errors", "check_max_depth", "check_mode", "check_timeout", "report"]

logger = logging.getLogger("aiosignals")

POLICIES: Final = ("raise", "collect", "log")
"""The error policies a signal, a send or a receiver may have."""


def check_errors(errors: object) -> ErrorPolicy:
    """
    Return *errors* if it is an error policy.

    :raises ValueError: otherwise
    """
    if errors not in POLICIES:
        raise ValueError(f"errors must be one of {POLICIES}, got {errors!r}")
    return errors


def check_timeout(timeout: object, *, what: str = "timeout") -> float | None:
    """
    Return *timeout* if it is ``None`` or a positive number of seconds.

    :raises TypeError: if it is not a number
    :raises ValueError: if it is zero, negative or NaN (every receiver would fail)
    """
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"{what} must be a number of seconds or None, got {timeout!r}")
    # NaN compares false with everything, so `timeout <= 0` alone lets it through.
    if math.isnan(timeout) or timeout <= 0:
        raise ValueError(f"{what} must be a positive number of seconds or None, got {timeout!r}")
    return timeout


def check_mode(mode: object) -> Mode:
    """
    Return *mode* if it is a ``Sequential()`` or ``Concurrent(...)`` instance.

    :raises TypeError: for the classes themselves, strings and anything else
    """
    if isinstance(mode, Sequential | Concurrent):
        return mode
    if mode is Sequential or mode is Concurrent:
        hint = f"{mode.__name__}()"
    else:
        hint = "Sequential() or Concurrent(limit=...)"
    raise TypeError(f"mode must be an instance such as {hint}, got {mode!r}")


def check_max_depth(max_depth: object) -> int:
    """
    Return *max_depth* if it is an integer of at least 1.

    :raises TypeError: if it is not an integer
    :raises ValueError: if it is below 1
    """
    if isinstance(max_depth, bool) or not isinstance(max_depth, int):
        raise TypeError(f"max_depth must be an integer, got {max_depth!r}")
    if max_depth < 1:
        raise ValueError(f"max_depth must be at least 1, got {max_depth}")
    return max_depth


def report(signal: object, fn: Callable[..., Any], exc: Exception, errors: ErrorPolicy) -> None:
    """Log *exc*, the failure of receiver *fn* of *signal*, when the policy is ``"log"``."""
    if errors == "log":
        logger.error(
            "receiver %r of %r failed", fn, signal, exc_info=(type(exc), exc, exc.__traceback__)
        )
