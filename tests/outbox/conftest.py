from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aiosignals.repository.sqlalchemy import Database
from tests.outbox import app


@pytest.fixture
def anyio_backend() -> str:
    # aiosqlite and asyncpg are asyncio drivers.
    return "asyncio"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'outbox.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    async with Database(db_url) as database:
        await database.create_all(app.Base.metadata)
        yield database


@pytest.fixture(autouse=True)
def fresh_app_state() -> None:
    """The test app's records start empty and its knobs at their defaults."""
    for collection in (
        app.DELIVERED,
        app.FLAKY,
        app.JOBS,
        app.OVERLAPS,
        app.IN_FLIGHT,
        app.STUBBORN,
        app.STEPS,
    ):
        collection.clear()
    app.BROKEN.clear()
    app.BROKEN.add("poison")
    app.SLOW.clear()
    app.GATES.clear()
    app.SLOW["slow"] = 1.0
