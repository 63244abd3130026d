"""The service protocol: something long-running that an application starts and stops."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from contextlib import contextmanager
from typing import Protocol, TypeVar, runtime_checkable

import anyio

__all__ = ["Service", "Stopper"]

_T = TypeVar("_T")


@runtime_checkable
class Service(Protocol):
    """
    Something that runs in the background as long as an application: a relay, a consumer.

    :class:`~aiosignals.outbox.OutboxRelay` and every transport's consumer
    (:class:`~aiosignals.transports.MemoryConsumer`, the Redis and FastStream consumers)
    are services; so is any object with these two methods. The web integrations run them
    with the app (``lifespan(services=[...])``, ``init_app(app, services=[...])``).

    .. versionadded:: 0.2
    """

    async def run(self) -> None:
        """
        Run until :meth:`stop` is called or the task is cancelled.

        A :meth:`stop` that came before ``run`` makes it return at once.
        """
        ...

    def stop(self) -> None:
        """
        Ask :meth:`run` to return soon; never blocks, and may be called from any task.

        The work in hand is finished first: what was not started is left for the next run.
        """
        ...


class Stopper:
    """
    The stop flag of a service: waits that :meth:`stop` ends, and one run at a time.

    The relay and the consumers share it, so that a stop before ``run`` returns at once,
    a stop during a wait ends the wait, and a stopped service may be run again.
    """

    def __init__(self) -> None:
        self._stopping = False
        self._running = False
        self._waits: set[anyio.CancelScope] = set()

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called since the current (or next) run began."""
        return self._stopping

    @property
    def is_running(self) -> bool:
        """Whether a :meth:`running` block is in progress."""
        return self._running

    def stop(self) -> None:
        """Set the flag and end every wait in progress; never blocks."""
        self._stopping = True
        for scope in tuple(self._waits):
            scope.cancel()

    def reset(self) -> None:
        """Clear the flag, so that the service may run again."""
        self._stopping = False

    @contextmanager
    def running(self, service: object) -> Generator[None]:
        """
        Mark *service* running for the block; clear the flag on the way out.

        :raises RuntimeError: if it is already running
        """
        if self._running:
            raise RuntimeError(f"{service!r} is already running")
        self._running = True
        try:
            yield
        finally:
            self._running = False
            self._stopping = False

    async def interruptible(self, fn: Callable[[], Awaitable[_T]]) -> tuple[bool, _T | None]:
        """Await ``fn()`` unless :meth:`stop` comes first; return (done, result)."""
        with anyio.CancelScope() as scope:
            self._waits.add(scope)
            if self._stopping:
                scope.cancel()
            try:
                return True, await fn()
            finally:
                self._waits.discard(scope)
        return False, None

    async def wait(self, seconds: float) -> bool:
        """Sleep *seconds* unless :meth:`stop` comes first; return whether it was stopped."""
        done, _ = await self.interruptible(lambda: anyio.sleep(seconds))
        return not done

    async def wait_until_stopped(self) -> None:
        """Return once :meth:`stop` is called (at once if it already was)."""
        await self.interruptible(anyio.sleep_forever)
