"""The relay and every transport's consumer are services the web integrations can run."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiosignals import Event, Service, Signal
from aiosignals.outbox import OutboxRelay
from aiosignals.repository.sqlalchemy import Database
from aiosignals.transports import (
    FastStreamTransport,
    MemoryTransport,
    RedisStreamTransport,
    Transport,
)


class Greeting(Event):
    text: str


def test_the_relay_and_every_consumer_are_services(tmp_path: Path) -> None:
    """OutboxRelay and the Memory, Redis and FastStream consumers satisfy Service."""
    from faststream.nats import NatsBroker

    signal = Signal(Greeting, name="greeting")
    with MemoryTransport() as memory:
        # Nothing connects: consumer() only builds the consumer.
        transports: list[Transport] = [
            memory,
            RedisStreamTransport("redis://127.0.0.1:1/0"),
            FastStreamTransport(NatsBroker("nats://127.0.0.1:1")),
        ]
        services: list[Service] = [t.consumer(signal) for t in transports]
    services.append(OutboxRelay(Database(f"sqlite+aiosqlite:///{tmp_path / 'db'}")))
    assert all(isinstance(service, Service) for service in services)


@pytest.mark.parametrize("module", ["fastapi", "aiohttp"])
def test_the_integrations_reexport_the_one_service_protocol(module: str) -> None:
    """aiosignals.integrations.<framework>.Service is aiosignals.Service, not a copy."""
    import importlib

    assert importlib.import_module(f"aiosignals.integrations.{module}").Service is Service
