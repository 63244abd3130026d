"""
The options that decide how a send runs its receivers: mode, error policy, timeout.

Each is checked here when it is given (at ``Signal()``, ``connect()`` or ``send()``), so a
bad value is an error at the first moment it is known rather than a failure at every
send. The layers below the send loops of :mod:`aiosignals._signal` live here too, each one
concern: :func:`invoke` applies the timeout and tracing, :func:`guarded` the error
policy (the receiver's own first), :func:`run_limited` the ``Concurrent(limit=...)``
workers, :func:`grouped` the one ``ExceptionGroup`` of a concurrent stage.
"""

from __future__ import annotations

import inspect
import logging
import math
from typing import TYPE_CHECKING, Any, Final, cast

import anyio

from . import _context, _tracing  # pyright: ignore[reportPrivateUsage] -- a module, not a name re-exported by __init__
from ._modes import Concurrent, Sequential
from ._threads import run_in_thread

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from ._event import Event
    from ._modes import Mode
    from ._receivers import ReceiverRecord
    from ._signal import Signal
    from ._types import ErrorPolicy

__all__ = [
    "POLICIES",
    "check_errors",
    "check_max_depth",
    "check_mode",
    "check_timeout",
    "grouped",
    "guarded",
    "invoke",
    "report",
    "run_limited",
]

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


def _min_timeout(first: float | None, second: float | None) -> float | None:
    if first is None:
        return second
    if second is None:
        return first
    return min(first, second)


async def invoke(
    signal: Signal[Any],
    record: ReceiverRecord,
    fn: Callable[..., Any],
    sender: Any,
    payload: Event,
    timeout: float | None,
) -> Any:
    """Call receiver *fn* of *signal* within the smaller of its own and *timeout*."""
    limit = _min_timeout(record.timeout, timeout)
    if _tracing.wraps_receivers:
        with _tracing.calling(signal, fn), anyio.fail_after(limit):
            return await _call(record, fn, sender, payload)
    if limit is None:
        return await _call(record, fn, sender, payload)
    with anyio.fail_after(limit):
        return await _call(record, fn, sender, payload)


async def _call(record: ReceiverRecord, fn: Callable[..., Any], sender: Any, payload: Event) -> Any:
    if record.is_async:
        return await fn(sender, payload)
    if record.thread:
        return await run_in_thread(fn, sender, payload)
    result = fn(sender, payload)
    # A plain function may still hand back an awaitable (a lambda around a coroutine
    # function, say): the send owns it and must await it.
    if inspect.isawaitable(result):
        result = await result
    return result


async def guarded(
    signal: Signal[Any],
    record: ReceiverRecord,
    fn: Callable[..., Any],
    sender: Any,
    payload: Event,
    errors: ErrorPolicy,
    timeout: float | None,
) -> Any:
    """
    Call *fn* as :func:`invoke` does, applying the error policy to what it raises.

    The receiver's own policy, if it has one, comes before the send's *errors*. With
    ``"raise"`` the failure propagates; otherwise it is returned (and logged with ``"log"``).
    """
    try:
        return await invoke(signal, record, fn, sender, payload, timeout)
    except Exception as exc:
        if record.errors is not None:
            errors = record.errors
        if errors == "raise":
            raise
        report(signal, fn, exc, errors)
        return exc


def grouped(signal: object, exc: Exception) -> ExceptionGroup[Exception]:
    """Return the failures of a concurrent stage as one group, the same on every backend."""
    failures: list[Exception] = (
        list(cast("ExceptionGroup[Exception]", exc).exceptions)
        if isinstance(exc, ExceptionGroup)
        else [exc]
    )
    return ExceptionGroup(f"{len(failures)} receiver(s) of {signal!r} failed", failures)


async def run_limited(
    starts: list[Callable[[], Coroutine[Any, Any, Any]]], limit: int
) -> list[Any]:
    """
    Await ``start()`` for each of *starts*, at most *limit* at once; return results in order.

    Each call is made only when a worker takes it (a once receiver is spent then, not
    before), and runs in a copy of the context, as if it had a task of its own.

    :raises BaseException: the cancellation exception a call raised itself, once the
        other calls are done
    """
    # Workers share one iterator: no semaphore is needed since next() never awaits.
    outcomes: list[Any] = [None] * len(starts)
    pending = iter(enumerate(starts))
    cancelled = anyio.get_cancelled_exc_class()
    escaped: list[BaseException] = []

    async def worker() -> None:
        for index, start in pending:
            try:
                outcomes[index] = await _context.in_copy(start())
            except cancelled as exc:
                # A receiver may raise the cancellation exception itself: asyncio's task
                # group then ends the worker quietly, and the receivers it would have run
                # would be reported as returning None. Re-raised below.
                escaped.append(exc)
                raise

    async with anyio.create_task_group() as group:
        for _ in range(min(limit, len(starts))):
            group.start_soon(worker)
    if escaped:
        # The group was not cancelled (it would have raised): a receiver raised it.
        raise escaped[0]
    return outcomes
