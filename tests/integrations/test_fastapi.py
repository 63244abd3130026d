"""What only the FastAPI integration does; what both integrations do is in test_lifecycle.py."""

# No `from __future__ import annotations`: FastAPI reads handler annotations at run time.

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI, Request

from aiosignals.integrations.fastapi import DepBus, lifespan

from . import free_port, run_python, sqlite_url
from .frameworks import FASTAPI

example = FASTAPI.example


@pytest.mark.asyncio
async def test_dep_bus_without_lifespan_is_a_clear_error() -> None:
    """A handler asking for the bus of an app started without the lifespan gets told why."""
    app = FastAPI()

    @app.get("/")
    async def handler(bus: DepBus) -> None: ...

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        with pytest.raises(RuntimeError, match=r"no EventBus is running.*lifespan"):
            await client.get("/")


@pytest.mark.anyio
async def test_a_stopped_app_hands_out_no_bus() -> None:
    """app.state holds the bus while the app runs only: a stopped app's handlers get told."""
    app = FASTAPI.bare_app()
    async with FASTAPI.started(app):
        assert app.state.aiosignals_bus.running
    assert not hasattr(app.state, "aiosignals_bus")


def test_import_aiosignals_does_not_import_the_integrations() -> None:
    """import aiosignals loads neither the integrations nor the frameworks."""
    code = (
        "import sys, aiosignals, aiosignals.integrations\n"
        "print([m for m in ('fastapi', 'starlette', 'aiohttp', 'aiosignals.integrations.fastapi')"
        " if m in sys.modules])"
    )
    assert run_python(code).strip() == "[]"


# -- under a real server: restarts, mounted sub-apps -------------------------------------


@asynccontextmanager
async def under_uvicorn(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Serve *app* with uvicorn (which passes the lifespan state on) and yield a client."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    async with anyio.create_task_group() as group:
        group.start_soon(server.serve)
        with anyio.fail_after(10):
            while not server.started:
                await anyio.sleep(0.01)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                yield client
        finally:
            server.should_exit = True


@pytest.mark.asyncio
async def test_the_example_app_starts_twice(tmp_path: Path) -> None:
    """The example builds its bus at each startup: a second lifespan run works too."""
    app = example.create_app(sqlite_url(tmp_path))
    # Served for real, twice: each run's bus delivers its welcome mail.
    for run in range(2):
        async with under_uvicorn(app) as client:
            created = await client.post("/users", json={"email": f"u{run}@x.org", "name": "u"})
            assert created.status_code == 201, created.text
    assert app.state.welcome_mails == ["u0@x.org", "u1@x.org"]


@pytest.mark.asyncio
async def test_dep_bus_works_in_a_mounted_sub_app() -> None:
    """The bus travels in the lifespan state: a mounted app's handlers (never started) get it."""
    api = FastAPI()

    @api.get("/ping")
    async def ping(bus: DepBus) -> bool:
        return bus.running

    @asynccontextmanager
    async def own_lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        # A lifespan of one's own around ours, merging its state with the bus's.
        async with lifespan()(app) as state:
            yield {**state, "mine": 1}

    main = FastAPI(lifespan=own_lifespan)

    @main.get("/mine")
    async def mine(bus: DepBus, request: Request) -> int:
        assert bus.running
        value: int = request.state.mine
        return value

    main.mount("/api", api)
    async with under_uvicorn(main) as client:
        assert (await client.get("/api/ping")).json() is True
        assert (await client.get("/mine")).json() == 1
