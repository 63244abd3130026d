"""The outbox relay is a service, and the integrations run services of one protocol."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from aiosignals import Service
from aiosignals.outbox import OutboxRelay
from aiosignals.repository.sqlalchemy import Database


def test_the_outbox_relay_is_a_service(tmp_path: Path) -> None:
    """OutboxRelay satisfies Service (the transports' consumers do too: test_memory.py)."""
    relay: Service = OutboxRelay(Database(f"sqlite+aiosqlite:///{tmp_path / 'db'}"))
    assert isinstance(relay, Service)


@pytest.mark.parametrize("module", ["fastapi", "aiohttp"])
def test_the_integrations_reexport_the_one_service_protocol(module: str) -> None:
    """aiosignals.integrations.<framework>.Service is aiosignals.Service, not a copy."""
    assert importlib.import_module(f"aiosignals.integrations.{module}").Service is Service
