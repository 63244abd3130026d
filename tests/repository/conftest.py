"""
One behaviour suite, every backend: the ``backend`` fixture hands each test the same
``User`` / ``Profile`` entity classes and repositories on memory, SQLite and PostgreSQL.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import ForeignKey
from sqlalchemy.orm import DeclarativeBase, Mapped, MappedAsDataclass, mapped_column

from aiosignals import Phase, Signal
from aiosignals.repository import MemoryRepository, Repository


@dataclasses.dataclass
class MemUser:
    id: int | None = None
    email: str = ""
    name: str = ""


@dataclasses.dataclass
class MemProfile:
    id: int | None = None
    user_id: int | None = None


class Base(MappedAsDataclass, DeclarativeBase):
    pass


class SqlUser(Base):
    __tablename__ = "users"
    id: Mapped[int | None] = mapped_column(primary_key=True, default=None)
    email: Mapped[str] = mapped_column(unique=True, default="")
    name: Mapped[str] = mapped_column(default="")


class SqlProfile(Base):
    __tablename__ = "profiles"
    id: Mapped[int | None] = mapped_column(primary_key=True, default=None)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)


@dataclasses.dataclass
class Backend:
    """What one test sees of a backend: entity classes and their repositories."""

    name: str
    User: Any
    Profile: Any
    users: Repository[Any]
    profiles: Repository[Any]
    transaction: Callable[[], AbstractAsyncContextManager[Any]]


@pytest.fixture
def anyio_backend() -> str:
    # aiosqlite and asyncpg are asyncio drivers; the memory backend's trio run is
    # tests/repository/test_memory.py.
    return "asyncio"


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "memory":
        users: Repository[Any] = MemoryRepository(MemUser)
        yield Backend(
            "memory", MemUser, MemProfile, users, MemoryRepository(MemProfile), users.transaction
        )
        return
    from aiosignals.repository.sqlalchemy import Database, SQLAlchemyRepository

    url = (
        f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    async with Database(url) as db:
        await db.create_all(Base.metadata)
        yield Backend(
            request.param,
            SqlUser,
            SqlProfile,
            SQLAlchemyRepository(SqlUser, db),
            SQLAlchemyRepository(SqlProfile, db),
            db.transaction,
        )


@pytest.fixture
def listen() -> Iterator[Callable[..., None]]:
    """Connect receivers for one test; disconnected at its end whatever happens."""
    connected: list[tuple[Signal[Any], Callable[..., Any], Any]] = []

    def connect(signal: Signal[Any], fn: Callable[..., Any], sender: Any, **options: Any) -> None:
        signal.connect(fn, sender=sender, weak=False, **options)
        connected.append((signal, fn, sender))

    yield connect
    for signal, fn, sender in connected:
        signal.disconnect(fn, sender=sender)


__all__ = ["Backend", "Phase"]
