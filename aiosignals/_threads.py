"""
Worker threads for ``thread=True`` receivers.

A plain function cannot be interrupted, so a receiver whose send times out or is
cancelled is abandoned: the send goes on while the thread finishes on its own. anyio's
``to_thread.run_sync(abandon_on_cancel=True)`` gives the thread's slot back at that
moment (so every timed-out send adds a thread, without bound) and, on asyncio, runs it in
a non-daemon thread that keeps the process from exiting until the function returns.

Here each receiver runs in a daemon thread of its own, and holds a slot of a per-event-loop
:class:`anyio.CapacityLimiter` until the function has actually returned: at most
:data:`MAX_THREADS` receiver threads run at once, abandoned ones included, and an exiting
process never waits for one. A send waiting for a slot waits within its receiver's timeout.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.from_thread
import anyio.lowlevel

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["MAX_THREADS", "run_in_thread"]

MAX_THREADS: Final = 40
"""How many receiver threads may run at once per event loop (anyio's default too)."""

_limiter: anyio.lowlevel.RunVar[anyio.CapacityLimiter] = anyio.lowlevel.RunVar(
    "aiosignals_thread_limiter"
)


def _current_limiter() -> anyio.CapacityLimiter:
    try:
        return _limiter.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(MAX_THREADS)
        _limiter.set(limiter)
        return limiter


async def run_in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """
    Call ``fn(*args)`` in a daemon thread, in a copy of the caller's context; return its result.

    If the caller is cancelled (or times out) the thread is abandoned; it keeps its slot of
    the limiter until *fn* returns.
    """
    limiter = _current_limiter()
    borrower = object()
    await limiter.acquire_on_behalf_of(borrower)
    token = anyio.lowlevel.current_token()
    done = anyio.Event()
    outcome: list[tuple[bool, Any]] = []
    context = contextvars.copy_context()

    def finish() -> None:
        limiter.release_on_behalf_of(borrower)
        done.set()

    def target() -> None:
        try:
            outcome.append((True, context.run(fn, *args)))
        except BaseException as exc:  # noqa: BLE001 -- handed to the awaiting send, raised there
            outcome.append((False, exc))
        # RuntimeError (RunFinishedError): the event loop has ended; nobody waits any more.
        with contextlib.suppress(RuntimeError):
            anyio.from_thread.run_sync(finish, token=token)

    try:
        threading.Thread(target=target, name=f"aiosignals receiver {fn!r}", daemon=True).start()
    except BaseException:
        limiter.release_on_behalf_of(borrower)
        raise
    await done.wait()
    ok, value = outcome[0]
    if ok:
        return value
    try:
        raise value
    finally:
        del value  # No reference cycle through the traceback.
