"""
What every web integration runs with its app: the bus and the services, started and stopped.

The FastAPI lifespan and the aiohttp cleanup context both enter :func:`running` at startup
and leave it at shutdown; they differ only in where they keep the bus for handlers.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import TypeAlias

import anyio
import anyio.abc

from .._bus import EventBus
from .._options import check_seconds
from .._service import Service

__all__ = ["BusOption", "new_bus", "running", "services_option"]

_logger = logging.getLogger("aiosignals")

BusOption: TypeAlias = EventBus | Callable[[], EventBus] | None
"""The ``bus`` option of the integrations: one bus, a factory of a new one, or the default."""


def new_bus(bus: BusOption) -> EventBus:
    """Return the bus to run for one startup, calling a factory if *bus* is one."""
    if bus is None:
        return EventBus()
    if isinstance(bus, EventBus):
        return bus
    made = bus()
    if not isinstance(made, EventBus):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise TypeError(f"the bus factory {bus!r} returned {made!r}, not an EventBus")
    return made


def services_option(
    services: Iterable[Service], relay: Service | None, stop_timeout: float
) -> tuple[Service, ...]:
    """
    Check the ``services=`` (deprecated ``relay=``) and ``stop_timeout=`` options once.

    Called when the app is built, so that a mistake fails there rather than at startup.

    :raises TypeError: if *services* is one service rather than a list of them, or holds
        something without ``run()`` and ``stop()``, or *stop_timeout* is not a number
    :raises ValueError: if *stop_timeout* is negative, infinite or NaN
    """
    check_seconds(stop_timeout, what="stop_timeout", zero=True)
    if isinstance(services, Service):
        raise TypeError(f"services= takes a list of services: services=[{services!r}]")
    listed = tuple(services)
    if relay is not None:
        warnings.warn(
            "relay= is deprecated and will be removed in 1.0: pass services=[relay]",
            DeprecationWarning,
            stacklevel=3,  # the line that called lifespan() or init_app()
        )
        listed = (*listed, relay)
    for service in listed:
        if not isinstance(service, Service):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(f"{service!r} is not a service: it needs async run() and stop()")
    return listed


class _Run:
    """One service's run, and whether it failed at start."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.starting = True
        self.failure: Exception | None = None
        self.returned = False

    async def __call__(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        # started() does not yield: run() takes its first step before the startup goes on,
        # so a failure straight away fails the startup, and a stop() at an immediate
        # shutdown comes after run() began (and reset any stop flag of its own).
        task_status.started()
        try:
            await self.service.run()
        except Exception as exc:
            if self.starting:
                self.failure = exc
            else:
                # Logged, not raised: a failed relay must not take the bus (or the app)
                # down with it, and a lifespan error would stop nothing but the bus.
                _logger.exception("%r failed and stopped; the app goes on without it", self.service)
        self.returned = True


@asynccontextmanager
async def running(
    bus: BusOption, services: Sequence[Service], stop_timeout: float
) -> AsyncGenerator[EventBus]:
    """
    Run a new bus and then *services*, in order, for as long as the block; yield the bus.

    On exit the services are stopped first (cancelled if they have not returned within
    *stop_timeout* seconds), so that what they deliver may still publish to the bus; then
    the bus drains.

    :raises RuntimeError: if a service's ``run()`` fails before it first waits (already
        running, options refused): the services started before it are stopped first
    """
    the_bus = new_bus(bus)
    # An error of the app's, raised into the block: kept out of the task group, so that the
    # services stop gracefully and the error comes out as raised, not in an ExceptionGroup.
    app_error: Exception | None = None
    async with the_bus:
        runs: list[_Run] = []
        async with anyio.create_task_group() as group:
            for service in services:
                runs.append(_Run(service))
                await group.start(runs[-1], name=f"aiosignals {service!r}")
                runs[-1].starting = False
                if runs[-1].failure is not None:
                    break
            if runs and runs[-1].failure is not None:
                _stop(runs, group, stop_timeout)
            else:
                try:
                    yield the_bus
                except Exception as exc:  # noqa: BLE001 -- raised again below, unwrapped
                    app_error = exc
                finally:
                    _stop(runs, group, stop_timeout)
        if group.cancel_scope.cancelled_caught:
            late = ", ".join(repr(run.service) for run in runs if not run.returned)
            _logger.warning("cancelled %s: still running %s s after stop()", late, stop_timeout)
        if runs and runs[-1].failure is not None:
            failed = runs[-1]
            raise RuntimeError(
                f"{failed.service!r} failed at start: {failed.failure!r}"
            ) from failed.failure
        if app_error is not None:
            raise app_error


def _stop(runs: Sequence[_Run], group: anyio.abc.TaskGroup, stop_timeout: float) -> None:
    for run in reversed(runs):
        try:
            run.service.stop()
        except Exception:
            # One broken stop() must not leave the services after it unstopped (cancelled
            # at the deadline instead) nor turn the app's shutdown into an error.
            _logger.exception("%r failed to stop; it is cancelled if still running", run.service)
    group.cancel_scope.deadline = anyio.current_time() + stop_timeout
