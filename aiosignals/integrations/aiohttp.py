"""
aiohttp integration: the bus and relay live as long as the application.

::

    from aiosignals.integrations.aiohttp import BUS_KEY, get_bus, init_app, transaction_middleware

    app = web.Application(middlewares=[transaction_middleware(db)])
    init_app(app, bus=partial(EventBus, workers=4), relay=OutboxRelay(db))

    async def create_user(request: web.Request) -> web.Response:
        await get_bus(request).publish(...)          # or request.app[BUS_KEY]

Needs the ``aiohttp`` extra: ``pip install "aiosignals[aiohttp]"``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Collection
from contextvars import ContextVar
from typing import TYPE_CHECKING, Protocol

try:
    from aiohttp import web
except ImportError as _error:  # pragma: no cover -- exercised in a subprocess by the tests
    raise ImportError(
        'aiosignals.integrations.aiohttp needs aiohttp: pip install "aiosignals[aiohttp]"'
        f" ({_error})"
    ) from _error

import anyio
import anyio.abc

from .._bus import EventBus

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


def init_app(
    app: web.Application,
    *,
    bus: EventBus | Callable[[], EventBus] | None = None,
    relay: Service | None = None,
    stop_timeout: float = 10.0,
) -> None:
    """
    Run an :class:`~aiosignals.EventBus` (and a relay) for as long as *app* runs.

    Adds a ``cleanup_ctx`` entry: on startup the bus starts and is stored as
    ``app[BUS_KEY]`` (read by :func:`get_bus`), then *relay* starts. On cleanup the relay is
    stopped first (:meth:`Service.stop`; cancelled if it has not returned within
    *stop_timeout* seconds), then the bus stops taking events and drains its buffer within
    its own ``drain_timeout``; what it could not deliver is logged and left in
    ``bus.undelivered``.

    The bus and the relay run in a task of their own, so that their task group never
    spans the code aiohttp runs between startup and cleanup. If the relay's ``run()``
    raises, the error is logged on the ``aiosignals`` logger and the app (and its bus) goes
    on without the relay.

    Call it after appending the ``cleanup_ctx`` entries the bus depends on (a database
    opened, receivers connected): those are set up before the bus and torn down after it.

    :param app: the application
    :param bus: the bus to run: a zero-argument factory that returns a new
        :class:`~aiosignals.EventBus` (such as ``partial(EventBus, workers=4)``), called at
        each startup, or one bus. A bus runs once, so an app given one bus cannot start
        twice (two test servers in a row); by default a new ``EventBus()`` is made at
        each startup
    :param relay: an outbox relay, or any :class:`Service`, run alongside
    :param stop_timeout: seconds the relay has to return after :meth:`Service.stop`
    :raises TypeError: at startup, if the factory *bus* returns something else than an
        :class:`~aiosignals.EventBus`

    .. versionadded:: 0.1
    """

    async def context(app: web.Application) -> AsyncIterator[None]:
        if bus is None:
            the_bus = EventBus()
        elif isinstance(bus, EventBus):
            the_bus = bus
        else:
            the_bus = bus()
            if not isinstance(the_bus, EventBus):  # pyright: ignore[reportUnnecessaryIsInstance]
                raise TypeError(f"the bus factory {bus!r} returned {the_bus!r}, not an EventBus")
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        stop = asyncio.Event()
        task = asyncio.create_task(
            _run(the_bus, relay, stop_timeout, ready, stop), name=f"aiosignals bus of {app!r}"
        )
        try:
            await ready
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


async def _run(
    bus: EventBus,
    relay: Service | None,
    stop_timeout: float,
    ready: asyncio.Future[None],
    stop: asyncio.Event,
) -> None:
    try:
        async with bus:
            if relay is None:
                ready.set_result(None)
                await stop.wait()
                return
            async with anyio.create_task_group() as group:
                await group.start(_run_service, relay, name=f"aiosignals {relay!r}")
                ready.set_result(None)
                await stop.wait()
                # Stopped before the bus drains: what the relay delivers may still publish.
                relay.stop()
                group.cancel_scope.deadline = anyio.current_time() + stop_timeout
    except BaseException as exc:
        if not ready.done():
            ready.set_exception(exc)  # the startup fails with it
        raise


async def _run_service(
    service: Service, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    # started() does not yield: run() has begun (and reset any stop flag of its own) by the
    # time startup goes on, so a stop() at an immediate cleanup is never lost.
    task_status.started()
    try:
        await service.run()
    except Exception:
        # Logged, not raised: a failed relay must not take the bus (or the app) down with
        # it, and a lifespan error would stop nothing but the bus.
        _logger.exception("%r failed and stopped; the app goes on without it", service)


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
