"""
Calling one receiver under its policies: timeout, thread, tracing, what a failure does.

A failure is raised, collected or logged (``"raise"``, ``"collect"``, ``"log"``), by the
receiver's own policy first, else the send's. The layers below the runners of
:mod:`aiosignals._runners`, each one concern: :func:`invoke` applies the timeout, the
thread and tracing, :func:`guarded` the error policy, :func:`grouped` makes the one
``ExceptionGroup`` of a concurrent stage.
"""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any, cast

import anyio

from . import _observers
from ._threads import run_in_thread

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._event import Event
    from ._records import ReceiverRecord
    from ._signal import Signal
    from ._types import ErrorPolicy

__all__ = ["grouped", "guarded", "invoke", "report"]

logger = logging.getLogger("aiosignals")


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
    if _observers.wraps_receivers:
        with _observers.calling(signal, fn), anyio.fail_after(limit):
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
