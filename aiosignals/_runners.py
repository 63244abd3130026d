"""
The runners of a send: the receivers of a plan called one after another or concurrently.

:func:`pick_runner` is the one function that picks a plan's runner, when the plan is built.

Layers, each one concern: :func:`pick_runner` decides once per plan which shortcut its
receivers and options allow; a runner walks the plan, asking
:mod:`aiosignals._admission` about receivers that are not plain; :func:`_run_stage` runs
the receivers of one priority concurrently, choosing the backend's task group in one
place; :mod:`aiosignals._policies` calls each receiver under its policies.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import anyio

from ._admission import admit
from ._asyncio_runner import on_asyncio, run_group
from ._context import in_copy
from ._options import Concurrent, Sequential
from ._policies import grouped, guarded

if TYPE_CHECKING:
    from ._event import Event
    from ._options import SendOptions
    from ._receivers import Plan
    from ._records import ReceiverRecord
    from ._signal import Signal
    from ._types import ErrorPolicy

__all__ = ["Results", "Runner", "pick_runner", "run_concurrent", "run_sequential"]

Results: TypeAlias = list[tuple[Callable[..., Any], Any]]
"""What a send returns: ``(receiver, result)`` pairs in call order."""

Runner: TypeAlias = Callable[
    ["Signal[Any]", "Plan", Any, "Event", "SendOptions"], Awaitable[Results]
]
"""Runs the receivers of a plan for one send."""

# Stands in the outcomes of a concurrent stage for a once receiver another send delivered.
_SKIPPED: Any = object()


def pick_runner(plain: bool, options: SendOptions) -> Runner | None:
    """
    Return the runner for a plan of receivers that are all *plain* or not, under *options*.

    The one place that decides which shortcut applies. ``None`` stands for the send's own
    inline loop (plain receivers, sequential, default policies): the common case, which
    :meth:`Signal.send <aiosignals.Signal.send>` runs without a runner's coroutine.
    """
    defaults = plain and options.errors == "raise" and options.timeout is None
    mode = options.mode
    if mode.__class__ is Sequential:
        return None if defaults else run_sequential
    assert isinstance(mode, Concurrent)
    return run_plain_concurrent if defaults and mode.limit is None else run_concurrent


async def run_sequential(
    signal: Signal[Any], plan: Plan, sender: Any, payload: Event, options: SendOptions
) -> Results:
    """Call the receivers of *plan* one after another, each under its policies."""
    errors, timeout = options.errors, options.timeout
    results: Results = []
    for record in plan.records:
        fn = (
            record.fn
            if record.plain
            else await admit(signal, record, sender, payload, errors, timeout)
        )
        if fn is None:
            continue
        results.append((fn, await guarded(signal, record, fn, sender, payload, errors, timeout)))
    return results


async def run_plain_concurrent(
    signal: Signal[Any], plan: Plan, sender: Any, payload: Event, options: SendOptions
) -> Results:
    """Run a plain plan by priority, each stage concurrently, its coroutines as they are."""
    results: Results = []
    for fns in plan.fn_stages:
        try:
            if len(fns) == 1:
                # One receiver needs no task: it is awaited here, in a copy of the context.
                results.append((fns[0], await in_copy(fns[0](sender, payload))))
                continue
            outcomes = await _run_stage(fns, sender, payload, None)
        except Exception as exc:  # noqa: BLE001 -- re-raised, grouped
            raise grouped(signal, exc) from None
        results.extend(zip(fns, outcomes, strict=True))
    return results


async def run_concurrent(
    signal: Signal[Any], plan: Plan, sender: Any, payload: Event, options: SendOptions
) -> Results:
    """Run the receivers of *plan* by priority, each stage concurrently, under policies."""
    errors, timeout = options.errors, options.timeout
    limit = options.mode.limit if isinstance(options.mode, Concurrent) else None
    results: Results = []
    for stage in plan.stages:
        fns, calls = await _admitted(signal, stage, sender, payload, errors, timeout)
        if not calls:
            continue
        try:
            outcomes = (
                [await in_copy(calls[0](sender, payload))]
                if len(calls) == 1
                else await _run_stage(calls, sender, payload, limit)
            )
        except Exception as exc:  # noqa: BLE001 -- re-raised, grouped
            raise grouped(signal, exc) from None
        results.extend(
            (fn, outcome)
            for fn, outcome in zip(fns, outcomes, strict=True)
            if outcome is not _SKIPPED
        )
    return results


async def _admitted(
    signal: Signal[Any],
    stage: Sequence[ReceiverRecord],
    sender: Any,
    payload: Event,
    errors: ErrorPolicy,
    timeout: float | None,
) -> tuple[list[Callable[..., Any]], list[Callable[[Any, Event], Coroutine[Any, Any, Any]]]]:
    """Return the receivers of *stage* that run now, and the calls that start each."""
    fns: list[Callable[..., Any]] = []
    calls: list[Callable[[Any, Event], Coroutine[Any, Any, Any]]] = []
    for record in stage:
        fn = (
            record.fn
            if record.plain
            else await admit(signal, record, sender, payload, errors, timeout, spend_later=True)
        )
        if fn is not None:
            fns.append(fn)
            calls.append(functools.partial(_start, signal, record, fn, errors, timeout))
    return fns, calls


async def _start(
    signal: Signal[Any],
    record: ReceiverRecord,
    fn: Callable[..., Any],
    errors: ErrorPolicy,
    timeout: float | None,
    sender: Any,
    payload: Event,
) -> Any:
    """Run one receiver of a concurrent stage, spending it first if it is a once one."""
    if not record.spend():
        return _SKIPPED  # Another send delivered it since this one admitted it.
    return await guarded(signal, record, fn, sender, payload, errors, timeout)


async def _run_stage(
    calls: Sequence[Callable[[Any, Event], Coroutine[Any, Any, Any]]],
    sender: Any,
    payload: Event,
    limit: int | None,
) -> list[Any]:
    """
    Await ``call(sender, payload)`` for each of *calls* concurrently; return results in order.

    As asyncio tasks on asyncio when no limit applies (the cheapest way there), on anyio
    workers otherwise: the one place the backend's task group is chosen.
    """
    if (limit is None or limit >= len(calls)) and on_asyncio():
        return await run_group([call(sender, payload) for call in calls])
    starts = [functools.partial(call, sender, payload) for call in calls]
    return await run_limited(starts, limit or len(starts))


async def run_limited(
    starts: Sequence[Callable[[], Coroutine[Any, Any, Any]]], limit: int
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
                outcomes[index] = await in_copy(start())
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
