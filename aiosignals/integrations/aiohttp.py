"""
aiohttp integration: the bus and its services live as long as the application.

::

    from aiosignals.integrations.aiohttp import BUS_KEY, get_bus, init_app, transaction_middleware

    app = web.Application(middlewares=[transaction_middleware(db)])
    init_app(app, bus=partial(EventBus, workers=4), services=[OutboxRelay(db)])

    async def create_user(request: web.Request) -> web.Response:
        await get_bus(request).publish(...)          # or request.app[BUS_KEY]

Needs the ``aiohttp`` extra: ``pip install "aiosignals[aiohttp]"``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Collection, Iterable
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from typing import TYPE_CHECKING

try:
    from aiohttp import web
except ImportError as _error:  # pragma: no cover -- exercised in a subprocess by the tests
    raise ImportError(
        'aiosignals.integrations.aiohttp needs aiohttp: pip install "aiosignals[aiohttp]"'
        f" ({_error})"
    ) from _error

from .._bus import EventBus
from .._service import Service
from ._lifecycle import BusOption, running, services_option

if TYPE_CHECKING:
    from aiohttp.typedefs import Handler, Middleware
    from sqlalchemy.ext.asyncio import AsyncSession

    from ..sqlalchemy import Database

__all__ = [
    "BUS_KEY",
    "WRITE_METHODS",
    "Service",
    "get_bus",
    "get_session",
    "init_app",
    "transaction_middleware",
]

_logger = logging.getLogger("aiosignals")

BUS_KEY = web.AppKey("aiosignals.bus", EventBus)
"""The application key of the running :class:`~aiosignals.EventBus`: ``app[BUS_KEY]``."""

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
"""The methods :func:`transaction_middleware` wraps in a transaction by default."""


def init_app(
    app: web.Application,
    *,
    bus: BusOption = None,
    services: Iterable[Service] = (),
    relay: Service | None = None,
    stop_timeout: float = 10.0,
) -> None:
    """
    Run an :class:`~aiosignals.EventBus` (and services) for as long as *app* runs.

    Adds a ``cleanup_ctx`` entry: on startup the bus starts and is stored as
    ``app[BUS_KEY]`` (read by :func:`get_bus`), then each of *services* starts, in order.
    On cleanup the services are stopped first (:meth:`~aiosignals.Service.stop`;
    cancelled if they have not returned within *stop_timeout* seconds), then the bus stops
    taking events and drains its buffer within its own ``drain_timeout``; what it could
    not deliver is logged and left in ``bus.undelivered``.

    The bus and the services run in a task of their own, so that their task group never
    spans the code aiohttp runs between startup and cleanup. A service whose ``run()``
    fails straight away (before it first waits) fails the startup; one that fails later
    is logged on the ``aiosignals`` logger and the app (and its bus) goes on without it.

    Call it after appending the ``cleanup_ctx`` entries the bus depends on (a database
    opened, receivers connected): those are set up before the bus and torn down after it.

    :param app: the application
    :param bus: the bus to run: a zero-argument factory that returns a new
        :class:`~aiosignals.EventBus` (such as ``partial(EventBus, workers=4)``), called at
        each startup, or one bus. A bus runs once, so an app given one bus cannot start
        twice (two test servers in a row); by default a new ``EventBus()`` is made at
        each startup
    :param services: what runs alongside: an :class:`~aiosignals.outbox.OutboxRelay`, a
        transport's consumer, any :class:`~aiosignals.Service`
    :param relay: deprecated: ``services=[relay]`` does the same
    :param stop_timeout: seconds the services have to return after
        :meth:`~aiosignals.Service.stop`
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

    async def context(app: web.Application) -> AsyncIterator[None]:
        ready: asyncio.Future[EventBus] = asyncio.get_running_loop().create_future()
        stop = asyncio.Event()
        task = asyncio.create_task(
            _host(running(bus, listed, stop_timeout), ready, stop),
            name=f"aiosignals bus of {app!r}",
        )
        try:
            the_bus = await ready
        except BaseException:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)  # raised here, not logged
            raise
        task.add_done_callback(_report_failure)
        # Set during startup, before aiohttp freezes the app. It stays after cleanup (a
        # frozen app's state cannot change): the closed bus then refuses events itself.
        app[BUS_KEY] = the_bus
        try:
            yield
        finally:
            stop.set()
            await task

    app.cleanup_ctx.append(context)


async def _host(
    lifecycle: AbstractAsyncContextManager[EventBus],
    ready: asyncio.Future[EventBus],
    stop: asyncio.Event,
) -> None:
    try:
        async with lifecycle as bus:
            ready.set_result(bus)
            await stop.wait()
    except BaseException as exc:
        if not ready.done():
            ready.set_exception(exc)  # the startup fails with it
        raise


def _report_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        _logger.error(
            "the aiosignals bus task failed; the bus is closed", exc_info=task.exception()
        )


def get_bus(app_or_request: web.Application | web.Request) -> EventBus:
    """
    Return the running :class:`~aiosignals.EventBus` of an application or of a request's app.

    A request of a sub-application finds the bus of the application it is mounted in.

    :raises RuntimeError: if :func:`init_app` was not called or the app is not running
    """
    mapping = (
        app_or_request.config_dict if isinstance(app_or_request, web.Request) else app_or_request
    )
    try:
        return mapping[BUS_KEY]
    except KeyError:
        raise RuntimeError(
            "no EventBus is running for this application: call"
            " aiosignals.integrations.aiohttp.init_app(app) before starting it"
        ) from None


def transaction_middleware(db: Database, *, methods: Collection[str] = WRITE_METHODS) -> Middleware:
    """
    Return a middleware that runs each handler of *methods* inside ``db.transaction()``.

    Every repository of *db* used by the handler (and by the receivers of the signals it
    sends) joins the transaction; :func:`get_session` hands the handler its instrumented
    session, whose ``session.add()`` sends the model signals. It commits when the handler
    returns, before aiohttp sends the response: a client that reads the response sees the
    data committed, and the ``AFTER_COMMIT`` receivers have run. If the handler raises, a
    ``web.HTTPException`` included, everything rolls back and ``AFTER_COMMIT`` receivers
    never run. A handler that *returns* an error response commits: raise
    (``raise web.HTTPConflict()``) to roll back. A handler that streams
    (``await response.prepare(request)``) sends its headers before the commit. Other
    methods (``GET`` by default) run without a transaction, as reads need none and SQLite
    would queue them behind writers.

    :param db: the database of the transaction
    :param methods: the HTTP methods to wrap
    :return: a middleware for ``web.Application(middlewares=[...])``

    .. versionadded:: 0.1
    """
    wrapped = frozenset(method.upper() for method in methods)

    @web.middleware
    async def transaction(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method not in wrapped:
            return await handler(request)
        async with db.transaction() as session:
            token = _session.set(session)
            try:
                return await handler(request)
            finally:
                _session.reset(token)

    return transaction


# The handler runs in the middleware's task: a context variable reaches it on every
# aiohttp version (web.RequestKey, for the request's own storage, needs aiohttp 3.12).
_session: ContextVar[AsyncSession | None] = ContextVar("aiosignals_request_session", default=None)


def get_session(request: web.Request) -> AsyncSession:
    """
    Return the session of the request's transaction, opened by :func:`transaction_middleware`.

    It is instrumented: ``session.add(...)`` in the handler sends the model signals at the
    flush, and their phases follow the request's transaction.

    :raises LookupError: if the request runs without a transaction (a method the
        middleware does not wrap, or no middleware)

    .. versionadded:: 0.2
    """
    session = _session.get()
    if session is None:
        raise LookupError(
            f"{request.method} {request.path} runs without a transaction: add"
            " transaction_middleware(db) to the application and include its method in methods="
        )
    return session
