"""The service protocol: something long-running that an application starts and stops."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["Service"]


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
