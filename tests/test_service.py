"""The outbox relay and every transport's consumer are services the web integrations run."""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from aiosignals import Event, Service, Signal
from aiosignals._service import Stopper
from aiosignals.outbox import OutboxRelay
from aiosignals.repository.sqlalchemy import Database
from aiosignals.transports import FastStreamTransport, MemoryTransport, RedisStreamTransport


class Tick(Event):
    n: int


def test_the_outbox_relay_is_a_service(tmp_path: Path) -> None:
    """OutboxRelay satisfies Service, for the type checkers and at run time."""
    relay: Service = OutboxRelay(Database(f"sqlite+aiosqlite:///{tmp_path / 'db'}"))
    assert isinstance(relay, Service)


def test_every_consumer_is_a_service() -> None:
    """The consumers of the memory, Redis and FastStream transports satisfy Service."""
    from faststream.nats import NatsBroker

    tick = Signal(Tick, name="tick")
    with MemoryTransport() as memory:
        # Nothing connects: consumer() only builds the consumer.
        for transport in (
            memory,
            RedisStreamTransport("redis://127.0.0.1:1/0"),
            FastStreamTransport(NatsBroker("nats://127.0.0.1:1")),
        ):
            consumer: Service = transport.consumer(tick)
            assert isinstance(consumer, Service), transport


@pytest.mark.parametrize("module", ["fastapi", "aiohttp"])
def test_the_integrations_reexport_the_one_service_protocol(module: str) -> None:
    """aiosignals.integrations.<framework>.Service is aiosignals.Service, not a copy."""
    assert importlib.import_module(f"aiosignals.integrations.{module}").Service is Service


# -- Stopper: the stop flag the relay and the consumers share ---------------------------


@pytest.mark.anyio
async def test_a_stop_before_the_wait_makes_it_return_at_once() -> None:
    """A wait after stop() returns at once and says it was stopped, however long it was."""
    stops = Stopper()
    stops.stop()
    assert stops.stopping
    assert await stops.wait(math.inf) is True
    assert await stops.interruptible(anyio.sleep_forever) == (False, None)


@pytest.mark.anyio
async def test_a_wait_that_is_not_stopped_returns_what_it_awaited() -> None:
    """Without a stop, wait() sleeps its time out and interruptible() returns the result."""
    stops = Stopper()
    assert await stops.wait(0) is False

    async def answer() -> int:
        return 42

    assert await stops.interruptible(answer) == (True, 42)
    assert not stops.stopping


@pytest.mark.anyio
async def test_stop_ends_every_wait_in_progress() -> None:
    """stop() from another task ends all the waits in progress, each seeing it was stopped."""
    stops = Stopper()
    ended: list[bool] = []

    async def waiter() -> None:
        ended.append(await stops.wait(math.inf))

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(waiter)
        tasks.start_soon(waiter)
        tasks.start_soon(stops.wait_until_stopped)
        await wait_all_tasks_blocked()
        assert ended == []
        stops.stop()
    assert ended == [True, True]


@pytest.mark.anyio
async def test_running_twice_at_once_is_refused_and_a_stopped_run_may_run_again() -> None:
    """running() refuses a second run at once, and clears the stop flag when the run ends."""
    stops = Stopper()
    service = object()
    assert not stops.is_running
    with stops.running(service):
        assert stops.is_running
        with pytest.raises(RuntimeError, match="already running"), stops.running(service):
            pass  # pragma: no cover
        stops.stop()
        assert await stops.wait(math.inf) is True
    assert not stops.stopping
    assert not stops.is_running
    with stops.running(service):
        assert await stops.wait(0) is False


def test_running_clears_the_flag_even_when_the_run_fails() -> None:
    """A run that raises leaves the service stoppable and runnable again."""
    stops = Stopper()
    with pytest.raises(ValueError), stops.running(object()):
        stops.stop()
        raise ValueError
    assert not stops.stopping
    with stops.running(object()):
        pass


def test_reset_clears_the_flag_for_the_next_run() -> None:
    """reset() is the end of a run for a service that does not refuse a second one."""
    stops = Stopper()
    stops.stop()
    stops.reset()
    assert not stops.stopping
