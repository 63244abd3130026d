"""The outbox relay and every transport's consumer are services the web integrations run."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from aiosignals import Event, Service, Signal
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
