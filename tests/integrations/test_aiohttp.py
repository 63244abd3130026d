"""What only the aiohttp integration does; what both integrations do is in test_lifecycle.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from aiosignals import EventBus
from aiosignals.integrations.aiohttp import BUS_KEY, get_bus, transaction_middleware
from aiosignals.repository.sqlalchemy import Database

from . import count, recording_after_commit, sqlite_url
from .frameworks import AIOHTTP

User: Any = AIOHTTP.example.User

Client = TestClient[web.Request, web.Application]


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[Client]:
    """Start *app* on a loopback port (startup, cleanup included) and yield a client."""
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


@pytest.mark.asyncio
async def test_a_handler_writes_with_the_instrumented_session_of_the_request(
    tmp_path: Path,
) -> None:
    """get_session(request).add(...) sends post_save, committed with the request."""
    url = sqlite_url(tmp_path)
    with recording_after_commit(User) as after_commit:
        async with serving(AIOHTTP.app_with_transactions(Database(url))) as client:
            added = await client.post("/add/sam@x")
            assert added.status == 201, await added.text()
            assert after_commit == ["sam@x"]
            outside = await (await client.get("/session")).json()
            assert "runs without a transaction" in outside
    assert await count(url, User, email="sam@x") == 1


@pytest.mark.asyncio
async def test_reads_run_without_a_transaction(tmp_path: Path) -> None:
    """GET is not wrapped (SQLite would queue reads behind writers); methods= changes that."""
    async with serving(AIOHTTP.app_with_transactions(Database(sqlite_url(tmp_path)))) as client:
        assert await (await client.get("/read")).json() == {"in_transaction": False}
    db = Database(sqlite_url(tmp_path))
    app = AIOHTTP.app_with_transactions(db)
    app.middlewares[0] = transaction_middleware(db, methods=["get"])
    async with serving(app) as client:
        assert await (await client.get("/read")).json() == {"in_transaction": True}


@pytest.mark.asyncio
async def test_get_bus_finds_the_bus_from_a_sub_application() -> None:
    """get_bus(request) of a sub-application's handler is the bus of the app it is mounted in."""
    bus = EventBus()
    app = AIOHTTP.bare_app(bus=bus)
    sub = web.Application()

    async def from_sub(request: web.Request) -> web.Response:
        return web.json_response(id(get_bus(request)))

    sub.router.add_get("/bus", from_sub)
    app.add_subapp("/sub", sub)
    async with serving(app) as client:
        assert await (await client.get("/sub/bus")).json() == id(bus)
        assert app[BUS_KEY] is get_bus(app) is bus


@pytest.mark.asyncio
async def test_get_bus_without_init_app_is_a_clear_error() -> None:
    """Asking for the bus of an app without init_app says what to do."""
    with pytest.raises(RuntimeError, match=r"no EventBus is running.*init_app"):
        get_bus(web.Application())
