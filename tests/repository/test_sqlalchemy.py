"""What only the SQLAlchemy backend has: mapped classes, engines, an unreachable server."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from aiosignals.repository.sqlalchemy import Database, SQLAlchemyRepository
from tests._servers import free_port

pytestmark = pytest.mark.anyio


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


class Pair(Base):
    __tablename__ = "pairs"
    left: Mapped[int] = mapped_column(primary_key=True)
    right: Mapped[int] = mapped_column(primary_key=True)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_a_sqlite_file_in_a_missing_directory_is_refused_up_front(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Database(f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'app.db'}")


def test_a_repository_needs_a_mapped_class_with_one_key_column() -> None:
    db = Database("sqlite+aiosqlite://")
    with pytest.raises(TypeError, match="needs a mapped class"):
        SQLAlchemyRepository(dict, db)
    with pytest.raises(TypeError, match="single-column primary key"):
        SQLAlchemyRepository(Pair, db)


async def test_an_in_memory_sqlite_database_keeps_its_rows_across_sessions() -> None:
    async with Database("sqlite+aiosqlite://") as db:
        await db.create_all(Base.metadata)
        items = SQLAlchemyRepository(Item, db)
        item = await items.add(Item(name="one"))
        assert (await items.get(item.id)) is not None


async def test_entities_come_back_detached_so_unsaved_changes_never_reach_the_row() -> None:
    async with Database("sqlite+aiosqlite://") as db:
        await db.create_all(Base.metadata)
        items = SQLAlchemyRepository(Item, db)
        item = await items.add(Item(name="one"))
        async with db.transaction():
            loaded = await items.get(item.id)
            assert loaded is not None
            loaded.name = "changed but never saved"
        again = await items.get(item.id)
        assert again is not None
        assert again.name == "one"


async def test_an_unreachable_server_raises_a_connection_error_and_writes_nothing() -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/none"
    async with Database(url, connect_args={"timeout": 2}) as db:
        items = SQLAlchemyRepository(Item, db)
        with pytest.raises(OSError):
            await items.add(Item(name="lost?"))
