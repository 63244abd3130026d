"""
FastAPI (and Starlette) integration: the bus and relay live as long as the app.

::

    from aiosignals.integrations.fastapi import DepBus, lifespan, transaction_dependency

    app = FastAPI(lifespan=lifespan(EventBus(workers=4), relay=OutboxRelay(db)))
    Transaction = Annotated[AsyncSession, transaction_dependency(db)]

    @app.post("/users")
    async def create_user(tx: Transaction, bus: DepBus) -> ...: ...

Needs the ``fastapi`` extra: ``pip install "aiosignals[fastapi]"``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any, Protocol, cast

try:
    from fastapi import Depends, Request, params
except ImportError as _error:  # pragma: no cover -- exercised in a subprocess by the tests
    raise ImportError(
        'aiosignals.integrations.fastapi needs FastAPI: pip install "aiosignals[fastapi]"'
        f" ({_error})"
    ) from _error

import anyio
import anyio.abc

from .._bus import EventBus

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession
    from starlette.applications import Starlette

    from ..repository.sqlalchemy import Database

__all__ = ["BUS_STATE", "DepBus", "Service", "get_bus", "lifespan", "transaction_dependency"]

_logger = logging.getLogger("aiosignals")

BUS_STATE = "aiosignals_bus"
"""The attribute of ``app.state`` that holds the running :class:`~aiosignals.EventBus`."""


class Service(Protocol):
    """
    Something that runs in the background as long as the app: an outbox relay, a consumer.

    :class:`~aiosignals.outbox.OutboxRelay` is one.
    """

    async def run(self) -> None:
        """Run until :meth:`stop` is called or the task is cancelled."""
        ...

    def stop(self) -> None:
        """Ask :meth:`run` to return soon."""
        ...


def lifespan(
    bus: EventBus | None = None,
    *,
    relay: Service | None = None,
    stop_timeout: float = 10.0,
) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    """
    Return a lifespan that runs an :class:`~aiosignals.EventBus` (and a relay) with the app.

    On startup the bus starts, is stored as ``app.state.aiosignals_bus`` (read by
    :func:`get_bus` and :data:`DepBus`), then *relay* starts in a task of its own. On
    shutdown the relay is stopped first (:meth:`Service.stop`; cancelled if it has not
    returned within *stop_timeout* seconds), then the bus stops taking events and drains
    its buffer within its own ``drain_timeout``; what it could not deliver is logged and
    left in ``bus.undelivered``. If the relay's ``run()`` raises, the error is logged
    on the ``aiosignals`` logger and the app (and its bus) goes on without the relay.

    Pass it to ``FastAPI(lifespan=...)``, or enter it inside a lifespan of your own::

        @asynccontextmanager
        async def app_lifespan(app: FastAPI) -> AsyncGenerator[None]:
            async with Database(url) as db, lifespan(relay=OutboxRelay(db))(app):
                yield

    :param bus: the bus to run; an :class:`~aiosignals.EventBus` runs once, so by default a
        new ``EventBus()`` is made at each startup (an app started twice, as in tests)
    :param relay: an outbox relay, or any :class:`Service`, run alongside
    :param stop_timeout: seconds the relay has to return after :meth:`Service.stop`
    :return: ``app -> async context manager``, what Starlette and FastAPI call a lifespan

    .. versionadded:: 0.1
    """

    @asynccontextmanager
    async def run(app: Starlette) -> AsyncGenerator[None]:
        the_bus = bus if bus is not None else EventBus()
        async with the_bus:
            setattr(app.state, BUS_STATE, the_bus)
            try:
                if relay is None:
                    yield
                else:
                    async with anyio.create_task_group() as group:
                        await group.start(_run_service, relay, name=f"aiosignals {relay!r}")
                        try:
                            yield
                        finally:
                            # Stopped before the bus drains: what the relay delivers may
                            # still publish to the bus.
                            relay.stop()
                            group.cancel_scope.deadline = anyio.current_time() + stop_timeout
            finally:
                # Handlers of a stopped app get a clear error, not a closed bus.
                delattr(app.state, BUS_STATE)

    return run


async def _run_service(
    service: Service, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    # started() does not yield: run() has begun (and reset any stop flag of its own) by the
    # time the lifespan goes on, so a stop() at an immediate shutdown is never lost.
    task_status.started()
    try:
        await service.run()
    except Exception:
        # Logged, not raised: a failed relay must not take the bus (or the app) down with
        # it, and a lifespan error would stop nothing but the bus.
        _logger.exception("%r failed and stopped; the app goes on without it", service)


def get_bus(request: Request) -> EventBus:
    """
    Return the app's running :class:`~aiosignals.EventBus`: the dependency behind :data:`DepBus`.

    :raises RuntimeError: if the app was not started with :func:`lifespan`
    """
    bus: EventBus | None = getattr(request.app.state, BUS_STATE, None)
    if bus is None:
        raise RuntimeError(
            "no EventBus is running for this app: create it with"
            " FastAPI(lifespan=aiosignals.integrations.fastapi.lifespan(...)), and start it"
            " (a test client must run the app's lifespan)"
        )
    return bus


DepBus = Annotated[EventBus, Depends(get_bus)]
"""A handler parameter annotated ``bus: DepBus`` receives the app's running bus."""


def transaction_dependency(db: Database) -> params.Depends:
    """
    Return a dependency that runs the handler inside ``db.transaction()``.

    Use it as a parameter, ``tx: Annotated[AsyncSession, transaction_dependency(db)]`` (the
    transaction's session), or in ``dependencies=[transaction_dependency(db)]``. Every
    repository of *db* used by the handler (and by the receivers of the signals it sends)
    joins the transaction.

    The transaction commits when the handler returns and its response has been built, and
    before the response is sent: a client that reads the response sees the data committed,
    and the ``AFTER_COMMIT`` receivers have run. The dependency is declared with FastAPI's
    ``scope="function"`` (FastAPI 0.121 or later) for that; a plain dependency with
    ``yield`` would commit only after the response has gone out. If the handler raises,
    an :class:`~fastapi.HTTPException` included, everything rolls back, ``AFTER_COMMIT``
    receivers never run and the exception goes on to FastAPI's handlers. A handler that
    *returns* an error response commits: raise to roll back. A failing commit (or a
    ``BEFORE_COMMIT`` veto) fails the request instead of answering with data never stored.

    :param db: the database of the transaction
    :return: a FastAPI ``Depends`` marker
    :raises RuntimeError: if the installed FastAPI predates dependency scopes (0.121)

    .. versionadded:: 0.1
    """

    async def transaction() -> AsyncGenerator[AsyncSession]:
        async with db.transaction() as session:
            yield session

    transaction.__qualname__ = f"transaction_dependency({db!r})"
    try:
        marker: Any = Depends(transaction, scope="function")  # type: ignore[call-arg,unused-ignore]
    except TypeError:  # pragma: no cover -- FastAPI < 0.121
        raise RuntimeError(
            "transaction_dependency() needs FastAPI 0.121 or later (dependency scopes):"
            " older versions would commit only after the response is sent"
        ) from None
    return cast("params.Depends", marker)
