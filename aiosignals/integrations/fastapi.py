"""
FastAPI (and Starlette) integration: the bus and its services live as long as the app.

::

    from aiosignals.integrations.fastapi import DepBus, lifespan, transaction_dependency

    app = FastAPI(lifespan=lifespan(partial(EventBus, workers=4), services=[OutboxRelay(db)]))
    Transaction = Annotated[AsyncSession, transaction_dependency(db)]

    @app.post("/users")
    async def create_user(tx: Transaction, bus: DepBus) -> ...: ...

Needs the ``fastapi`` extra: ``pip install "aiosignals[fastapi]"``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any, cast

try:
    from fastapi import Depends, Request, params
except ImportError as _error:  # pragma: no cover -- exercised in a subprocess by the tests
    raise ImportError(
        'aiosignals.integrations.fastapi needs FastAPI: pip install "aiosignals[fastapi]"'
        f" ({_error})"
    ) from _error

from .._bus import EventBus
from .._service import Service
from ._lifecycle import BusOption, running, services_option

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession
    from starlette.applications import Starlette

    from ..repository.sqlalchemy import Database

__all__ = ["BUS_STATE", "DepBus", "Service", "get_bus", "lifespan", "transaction_dependency"]

BUS_STATE = "aiosignals_bus"
"""
The key of the running :class:`~aiosignals.EventBus` in the lifespan state (``request.state``)
and the attribute of ``app.state`` that holds it.
"""


def lifespan(
    bus: BusOption = None,
    *,
    services: Iterable[Service] = (),
    relay: Service | None = None,
    stop_timeout: float = 10.0,
) -> Callable[[Starlette], AbstractAsyncContextManager[dict[str, Any]]]:
    """
    Return a lifespan that runs an :class:`~aiosignals.EventBus` (and services) with the app.

    On startup the bus starts and is yielded as the lifespan state ``{"aiosignals_bus": bus}``
    (:data:`BUS_STATE`), which Starlette copies into every request's ``request.state``,
    requests of mounted sub-applications included; it is also stored as
    ``app.state.aiosignals_bus``. :func:`get_bus` and :data:`DepBus` read the former, then
    the latter. Then each of *services* starts, in order, in a task of its own. On
    shutdown the services are stopped first (:meth:`~aiosignals.Service.stop`; cancelled
    if they have not returned within *stop_timeout* seconds), then the bus stops taking
    events and drains its buffer within its own ``drain_timeout``; what it could not
    deliver is logged and left in ``bus.undelivered``. A service whose ``run()`` fails
    straight away (before it first waits) fails the startup; one that fails later is
    logged on the ``aiosignals`` logger and the app (and its bus) goes on without it.

    Pass it to ``FastAPI(lifespan=...)``, or enter it inside a lifespan of your own and
    yield its state, merged with yours if you have some (``yield {**state, "db": db}``)::

        @asynccontextmanager
        async def app_lifespan(app: FastAPI) -> AsyncGenerator[dict[str, Any]]:
            async with Database(url) as db, lifespan(services=[OutboxRelay(db)])(app) as state:
                yield state

    A lifespan of your own that yields nothing still works in the main app (``get_bus``
    falls back to ``app.state``), but not in a mounted sub-application.

    :param bus: the bus to run: a zero-argument factory that returns a new
        :class:`~aiosignals.EventBus` (such as ``partial(EventBus, workers=4)``), called at
        each startup, or one bus. A bus runs once, so an app given one bus cannot start
        twice (two test clients in a row); by default a new ``EventBus()`` is made at
        each startup
    :param services: what runs alongside: an :class:`~aiosignals.outbox.OutboxRelay`, a
        transport's consumer, any :class:`~aiosignals.Service`
    :param relay: deprecated: ``services=[relay]`` does the same
    :param stop_timeout: seconds the services have to return after
        :meth:`~aiosignals.Service.stop`
    :return: ``app -> async context manager``, what Starlette and FastAPI call a lifespan;
        it yields the lifespan state ``{"aiosignals_bus": bus}``
    :raises TypeError: if *services* is not a list of services, or *stop_timeout* not a
        number; at startup, if the factory *bus* returns something else than an
        :class:`~aiosignals.EventBus`
    :raises ValueError: if *stop_timeout* is negative, infinite or NaN
    :raises RuntimeError: at startup, if a service fails straight away

    .. versionadded:: 0.1
    .. versionchanged:: 0.2
       *services*; *relay* is deprecated.
    """
    listed = services_option(services, relay, stop_timeout)

    @asynccontextmanager
    async def run(app: Starlette) -> AsyncGenerator[dict[str, Any]]:
        async with running(bus, listed, stop_timeout) as the_bus:
            setattr(app.state, BUS_STATE, the_bus)
            try:
                yield {BUS_STATE: the_bus}
            finally:
                # Handlers of a stopped app get a clear error, not a closed bus.
                delattr(app.state, BUS_STATE)

    return run


def get_bus(request: Request) -> EventBus:
    """
    Return the app's running :class:`~aiosignals.EventBus`: the dependency behind :data:`DepBus`.

    Read from the lifespan state (``request.state``), which reaches mounted
    sub-applications, else from ``request.app.state``.

    :raises RuntimeError: if the app was not started with :func:`lifespan`
    """
    bus: EventBus | None = getattr(request.state, BUS_STATE, None)
    if bus is None:
        bus = getattr(request.app.state, BUS_STATE, None)
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
