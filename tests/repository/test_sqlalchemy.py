"""What only the SQLAlchemy backend has: mapped classes, engines, an unreachable server."""

from __future__ import annotations

import functools
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from sqlalchemy import event
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
    """Database() refuses a SQLite file whose directory does not exist, before connecting."""
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Database(f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'app.db'}")


def test_a_repository_needs_a_mapped_class_with_one_key_column() -> None:
    """SQLAlchemyRepository refuses a class that is not mapped or has a composite primary key."""
    db = Database("sqlite+aiosqlite://")
    with pytest.raises(TypeError, match="needs a mapped class"):
        SQLAlchemyRepository(dict, db)
    with pytest.raises(TypeError, match="single-column primary key"):
        SQLAlchemyRepository(Pair, db)


async def test_an_in_memory_sqlite_database_keeps_its_rows_across_sessions() -> None:
    """A row added to an in-memory SQLite database is still there for the next session."""
    async with Database("sqlite+aiosqlite://") as db:
        await db.create_all(Base.metadata)
        items = SQLAlchemyRepository(Item, db)
        item = await items.add(Item(name="one"))
        assert (await items.get(item.id)) is not None


async def test_entities_come_back_detached_so_unsaved_changes_never_reach_the_row() -> None:
    """A loaded entity changed but not saved inside a transaction leaves its row unchanged."""
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
    """A write to a PostgreSQL server that is not listening raises OSError."""
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/none"
    async with Database(url, connect_args={"timeout": 2}) as db:
        items = SQLAlchemyRepository(Item, db)
        with pytest.raises(OSError):
            await items.add(Item(name="lost?"))


async def test_transactions_of_two_databases_nest_without_becoming_savepoints(
    tmp_path: Path,
) -> None:
    """A transaction of database b inside one of database a commits or rolls back on its own."""
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


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A real database: an SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    found: str = request.getfixturevalue("postgres_url")
    return found


async def test_a_transaction_cancelled_while_its_commit_is_in_flight_follows_the_database(
    url: str,
) -> None:
    """Cancelled as COMMIT starts, a committed row runs AFTER_COMMIT, never AFTER_ROLLBACK."""
    phases: list[str] = []

    async def committed(sender: type[Item], payload: PostSave[Item]) -> None:
        phases.append("after_commit")

    async def rolled_back(sender: type[Item], payload: PostSave[Item]) -> None:
        phases.append("after_rollback")

    post_save.connect(committed, sender=Item, phase=Phase.AFTER_COMMIT)
    post_save.connect(rolled_back, sender=Item, phase=Phase.AFTER_ROLLBACK)
    scope = anyio.CancelScope()
    commits: list[str] = []

    def on_commit(connection: object) -> None:
        # The engine's commit event fires just before the driver's COMMIT: cancelling
        # here lands on the task while it awaits the COMMIT's reply.
        commits.append("COMMIT")
        scope.cancel()

    try:
        async with Database(url) as db:
            await db.create_all(Base.metadata)
            items = SQLAlchemyRepository(Item, db)
            event.listen(db.engine.sync_engine, "commit", on_commit)
            with scope:
                async with db.transaction():
                    await items.add(Item(name="kept"))
            event.remove(db.engine.sync_engine, "commit", on_commit)
            assert commits == ["COMMIT"]
            assert scope.cancelled_caught
            assert [item.name for item in await items.list()] == ["kept"]
            assert phases == ["after_commit"]
    finally:
        post_save.disconnect(committed, sender=Item)
        post_save.disconnect(rolled_back, sender=Item)


async def test_overlapping_transactions_on_in_memory_sqlite_take_turns() -> None:
    """Two tasks' transactions on the one in-memory connection run one after the other."""
    async with Database("sqlite+aiosqlite://") as db:
        await db.create_all(Base.metadata)
        items = SQLAlchemyRepository(Item, db)
        first_wrote = anyio.Event()

        async def first() -> None:
            async with db.transaction():
                await items.add(Item(name="a1"))
                first_wrote.set()
                await anyio.wait_all_tasks_blocked()
                await items.add(Item(name="a2"))

        async def second() -> None:
            await first_wrote.wait()
            with pytest.raises(LookupError, match="second's own"):
                async with db.transaction():
                    await items.add(Item(name="b1"))
                    raise LookupError("second's own")

        async with anyio.create_task_group() as group:
            group.start_soon(first)
            group.start_soon(second)
        assert sorted(item.name for item in await items.list()) == ["a1", "a2"]


async def test_savepoints_of_two_child_tasks_in_one_transaction_keep_their_own_outcome(
    url: str,
) -> None:
    """Two child tasks' savepoints in one transaction: each its own error, rolled-back rows gone."""
    async with Database(url) as db:
        await db.create_all(Base.metadata)
        items = SQLAlchemyRepository(Item, db)
        errors: dict[str, BaseException] = {}

        async def child(name: str, *, fail: bool) -> None:
            try:
                async with db.transaction():
                    await items.add(Item(name=name))
                    await anyio.lowlevel.checkpoint()
                    await items.add(Item(name=f"{name}-second"))
                    if fail:
                        raise LookupError(name)
            except LookupError as exc:
                errors[name] = exc

        with anyio.fail_after(10):
            async with db.transaction():
                await items.add(Item(name="outer"))
                async with anyio.create_task_group() as group:
                    group.start_soon(functools.partial(child, "x", fail=True))
                    group.start_soon(functools.partial(child, "y", fail=True))
                    group.start_soon(functools.partial(child, "z", fail=False))
        assert {name: str(exc) for name, exc in errors.items()} == {"x": "x", "y": "y"}
        assert sorted(item.name for item in await items.list()) == ["outer", "z", "z-second"]


async def test_twenty_tasks_saving_one_new_entity_insert_it_once(url: str) -> None:
    """20 tasks save() one new entity at once: one insert, then updates, as MemoryRepository."""
    created: list[bool] = []

    async def record(sender: type[Item], payload: PostSave[Item]) -> None:
        created.append(payload.created)

    post_save.connect(record, sender=Item)
    try:
        async with Database(url) as db:
            await db.create_all(Base.metadata)
            items = SQLAlchemyRepository(Item, db)
            item = Item(name="shared")
            async with anyio.create_task_group() as group:
                for _ in range(20):
                    group.start_soon(items.save, item)
            assert sorted(created) == [False] * 19 + [True]
            assert [(i.id, i.name) for i in await items.list()] == [(item.id, "shared")]
    finally:
        post_save.disconnect(record, sender=Item)


class Account(Base):
    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    plan: Mapped[str] = mapped_column(default="free", server_default="free")


async def test_saving_a_fresh_object_whose_key_exists_writes_only_what_it_holds(
    url: str,
) -> None:
    """save(Account(id=42, name=...)) over a stored row keeps the columns it never set."""
    async with Database(url) as db:
        await db.create_all(Base.metadata)
        accounts = SQLAlchemyRepository(Account, db)
        await accounts.add(Account(id=42, name="Kay", plan="pro"))
        await accounts.save(Account(id=42, name="Kai"))
        stored = await accounts.get(42)
        assert stored is not None
        assert (stored.name, stored.plan) == ("Kai", "pro")
        await accounts.save(Account(id=43, name="new"))  # an insert applies the defaults
        inserted = await accounts.get(43)
        assert inserted is not None
        assert inserted.plan == "free"
