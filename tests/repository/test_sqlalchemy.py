"""What only the SQLAlchemy backend has: mapped classes, engines, an unreachable server."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from aiosignals import Phase
from aiosignals.models import PostSave, post_save
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


async def test_transactions_of_two_databases_nest_without_becoming_savepoints(
    tmp_path: Path,
) -> None:
    events: list[str] = []

    async def before_commit(sender: type[Item], payload: PostSave[Item]) -> None:
        if payload.instance.name == "vetoed":
            raise LookupError("veto")

    async def after_commit(sender: type[Item], payload: PostSave[Item]) -> None:
        events.append(f"committed {payload.instance.name}")

    post_save.connect(before_commit, sender=Item, phase=Phase.BEFORE_COMMIT)
    post_save.connect(after_commit, sender=Item, phase=Phase.AFTER_COMMIT)
    try:
        async with (
            Database(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}") as db_a,
            Database(f"sqlite+aiosqlite:///{tmp_path / 'b.db'}") as db_b,
        ):
            for db in (db_a, db_b):
                await db.create_all(Base.metadata)
            items_a, items_b = SQLAlchemyRepository(Item, db_a), SQLAlchemyRepository(Item, db_b)
            async with db_a.transaction():
                await items_a.add(Item(name="in a"))
                with pytest.raises(LookupError):
                    async with db_b.transaction():
                        await items_b.add(Item(name="vetoed"))
                async with db_b.transaction():
                    await items_b.add(Item(name="in b"))
                # b's transaction committed on its own, with its receivers; a's waits.
                assert events == ["committed in b"]
            assert events == ["committed in b", "committed in a"]
            assert [i.name for i in await items_b.list()] == ["in b"]
            assert [i.name for i in await items_a.list()] == ["in a"]
    finally:
        post_save.disconnect(before_commit, sender=Item)
        post_save.disconnect(after_commit, sender=Item)
