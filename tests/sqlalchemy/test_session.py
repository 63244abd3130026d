"""Model signals from the flushes of instrumented sessions: SQLite files and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from sqlalchemy import ForeignKey, event
from sqlalchemy.ext.asyncio import async_object_session, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from aiosignals import Phase, RecursionDepthError, Signal
from aiosignals.models import (
    PostDelete,
    PostSave,
    PreDelete,
    PreSave,
    post_delete,
    post_save,
    pre_delete,
    pre_save,
)
from aiosignals.outbox._table import outbox
from aiosignals.sqlalchemy import Database, NestedFlushError, SQLAlchemyRepository, instrument

pytestmark = pytest.mark.anyio


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str]
    name: Mapped[str] = mapped_column(default="")


class Profile(Base):
    __tablename__ = "profiles"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aiosqlite and asyncpg are asyncio drivers


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    url = (
        f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    async with Database(url, name="main") as database:
        await database.create_all(Base.metadata)
        yield database


Listen = Callable[..., None]


@pytest.fixture
def listen() -> Iterator[Listen]:
    """Connect receivers for one test; disconnected at its end whatever happens."""
    connected: list[tuple[Signal[Any], Callable[..., Any], Any, str | None]] = []

    def connect(signal: Signal[Any], fn: Callable[..., Any], sender: Any, **options: Any) -> None:
        signal.connect(fn, sender=sender, weak=False, **options)
        connected.append((signal, fn, sender, options.get("dispatch_uid")))

    yield connect
    for signal, fn, sender, uid in connected:
        # A connection made under a uid is keyed by it (as in Django), not by the receiver.
        if uid is None:
            signal.disconnect(fn, sender=sender)
        else:
            signal.disconnect(dispatch_uid=uid, sender=sender)


async def _emails(db: Database) -> list[str]:
    async with db.sessionmaker() as session:
        return list((await session.scalars(sa.select(User.email).order_by(User.id))).all())


async def test_session_add_sends_pre_save_before_and_post_save_after_the_insert(
    db: Database, listen: Listen
) -> None:
    """pre_save runs before the INSERT (its change is written), post_save after, created exact."""
    seen: list[tuple[str, bool, Any]] = []

    async def before(sender: type[User], payload: PreSave[User]) -> None:
        seen.append(("pre", payload.created, payload.instance.id))
        payload.instance.name = "set by pre_save"

    async def after(sender: type[User], payload: PostSave[User]) -> None:
        seen.append(("post", payload.created, payload.using))
        assert payload.instance.id is not None

    listen(pre_save, before, User)
    listen(post_save, after, User)
    async with db.transaction() as session:
        session.add(User(email="a@x"))
    assert seen == [("pre", True, None), ("post", True, "main")]
    async with db.sessionmaker() as session:  # outside db.transaction(), committed by hand
        session.add(User(email="b@x"))
        await session.commit()
    assert seen[-1] == ("post", True, "main")
    async with db.sessionmaker() as session:
        stored = await session.scalar(sa.select(User))
        assert stored is not None
        assert stored.name == "set by pre_save"


async def test_an_update_reports_the_changed_fields_and_their_previous_values(
    db: Database, listen: Listen
) -> None:
    """An update's post_save has update_fields from the history and previous values."""
    payloads: list[PostSave[User]] = []

    async def after(sender: type[User], payload: PostSave[User]) -> None:
        payloads.append(payload)

    async with db.transaction() as session:
        session.add(User(email="a@x", name="Ann"))
    listen(post_save, after, User)
    async with db.transaction() as session:
        user = await session.scalar(sa.select(User))
        assert user is not None
        user.name = "Anna"
        user.email = "a@x"  # set to the same value: not a change
    assert [(p.created, p.update_fields, p.previous) for p in payloads] == [
        (False, frozenset({"name"}), {"name": "Ann"})
    ]


async def test_session_delete_sends_pre_and_post_delete(db: Database, listen: Listen) -> None:
    """session.delete() sends pre_delete before the DELETE and post_delete after it."""
    seen: list[str] = []

    async def before(sender: type[User], payload: PreDelete[User]) -> None:
        seen.append(f"pre {payload.instance.email}")

    async def after(sender: type[User], payload: PostDelete[User]) -> None:
        seen.append(f"post {payload.instance.email}")

    async with db.transaction() as session:
        session.add(User(email="gone@x"))
    listen(pre_delete, before, User)
    listen(post_delete, after, User)
    async with db.transaction() as session:
        user = await session.scalar(sa.select(User))
        await session.delete(user)
    assert seen == ["pre gone@x", "post gone@x"]
    assert await _emails(db) == []


async def test_objects_added_by_post_save_receivers_are_flushed_with_their_own_signals(
    db: Database, listen: Listen
) -> None:
    """A post_save receiver adding a Profile to the session has it written and signalled."""
    profiles: list[int] = []

    async def create_profile(sender: type[User], payload: PostSave[User]) -> None:
        if payload.created:
            session = async_object_session(payload.instance)
            assert session is not None
            session.add(Profile(user_id=payload.instance.id))

    async def profile_saved(sender: type[Profile], payload: PostSave[Profile]) -> None:
        profiles.append(payload.instance.user_id)

    listen(post_save, create_profile, User)
    listen(post_save, profile_saved, Profile)
    async with db.transaction() as session:
        user = User(email="a@x")
        session.add(user)
        await session.flush()
    assert profiles == [user.id]
    async with db.sessionmaker() as session:
        assert await session.scalar(sa.select(sa.func.count()).select_from(Profile)) == 1


async def test_phases_follow_a_transaction_the_application_commits_itself(
    db: Database, listen: Listen
) -> None:
    """With an app's own instrumented sessionmaker, AFTER_COMMIT follows session.commit()."""
    log: list[str] = []

    async def after_commit(sender: type[User], payload: PostSave[User]) -> None:
        log.append(f"committed {payload.instance.email}")

    async def after_rollback(sender: type[User], payload: PostSave[User]) -> None:
        log.append(f"rolled back {payload.instance.email}")

    listen(post_save, after_commit, User, phase=Phase.AFTER_COMMIT)
    listen(post_save, after_rollback, User, phase=Phase.AFTER_ROLLBACK)
    maker = instrument(async_sessionmaker(db.engine, expire_on_commit=False))
    async with maker() as session:
        session.add(User(email="kept@x"))
        await session.flush()
        assert log == []
        await session.commit()
        assert log == ["committed kept@x"]
        session.add(User(email="lost@x"))
        await session.flush()
        await session.rollback()
    async with maker() as session, session.begin():
        session.add(User(email="begin@x"))
    assert log == ["committed kept@x", "rolled back lost@x", "committed begin@x"]
    assert await _emails(db) == ["kept@x", "begin@x"]


async def test_a_before_commit_receiver_vetoes_the_applications_commit(
    db: Database, listen: Listen
) -> None:
    """A BEFORE_COMMIT receiver raising stops session.commit(); nothing is committed."""

    async def veto(sender: type[User], payload: PostSave[User]) -> None:
        raise PermissionError("vetoed")

    listen(post_save, veto, User, phase=Phase.BEFORE_COMMIT)
    maker = instrument(async_sessionmaker(db.engine))
    with pytest.raises(PermissionError, match="vetoed"):
        async with maker() as session, session.begin():
            session.add(User(email="vetoed@x"))
    assert await _emails(db) == []


async def test_a_rolled_back_savepoint_drops_its_deferred_receivers(
    db: Database, listen: Listen
) -> None:
    """begin_nested(): a rolled-back savepoint's AFTER_COMMIT receivers never run."""
    log: list[str] = []

    async def after_commit(sender: type[User], payload: PostSave[User]) -> None:
        log.append(payload.instance.email)

    listen(post_save, after_commit, User, phase=Phase.AFTER_COMMIT)
    maker = instrument(async_sessionmaker(db.engine, expire_on_commit=False))
    async with maker() as session:
        async with session.begin():
            session.add(User(email="outer@x"))
            await session.flush()
            with pytest.raises(LookupError):
                async with session.begin_nested():
                    session.add(User(email="inner@x"))
                    await session.flush()
                    raise LookupError
            async with session.begin_nested():
                session.add(User(email="kept@x"))
        assert log == ["outer@x", "kept@x"]
    assert await _emails(db) == ["outer@x", "kept@x"]


async def test_durable_receivers_write_their_outbox_rows_in_the_sessions_transaction(
    db: Database, listen: Listen
) -> None:
    """A durable receiver's row commits with the session's transaction and rolls back with it."""

    async def durable(sender: type[User], payload: PostSave[User]) -> None:
        raise AssertionError("delivered by the relay, not here")

    listen(post_save, durable, User, durable=True, dispatch_uid="tests.session.durable")
    maker = instrument(async_sessionmaker(db.engine))
    async with maker() as session:
        session.add(User(email="kept@x"))
        await session.commit()
        session.add(User(email="lost@x"))
        await session.flush()
        await session.rollback()
    async with db.sessionmaker() as session:
        payloads = (await session.scalars(sa.select(outbox.c.payload))).all()
    assert len(payloads) == 1
    assert "kept@x" in payloads[0]


async def test_sessions_nobody_instrumented_send_nothing(db: Database, listen: Listen) -> None:
    """A plain async_sessionmaker's flushes send no model signal."""
    seen: list[str] = []

    async def after(sender: type[User], payload: PostSave[User]) -> None:
        seen.append(payload.instance.email)

    listen(post_save, after, User)
    async with async_sessionmaker(db.engine)() as session, session.begin():
        session.add(User(email="plain@x"))
    assert seen == []
    assert await _emails(db) == ["plain@x"]


async def test_instrumenting_twice_is_a_no_op_and_wrong_things_are_type_errors(
    db: Database, listen: Listen
) -> None:
    """instrument() twice sends once; a sync sessionmaker or an engine is a TypeError."""
    seen: list[str] = []

    async def after(sender: type[User], payload: PostSave[User]) -> None:
        seen.append(payload.instance.email)

    listen(post_save, after, User)
    maker = async_sessionmaker(db.engine)
    assert instrument(instrument(maker)) is maker
    async with maker() as session, session.begin():
        session.add(User(email="once@x"))
    assert seen == ["once@x"]
    with pytest.raises(TypeError, match=r"async_sessionmaker\(engine\)"):
        instrument(sessionmaker(db.engine.sync_engine))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not the engine itself"):
        instrument(db.engine)  # type: ignore[arg-type]


async def test_bulk_statements_send_nothing(db: Database, listen: Listen) -> None:
    """session.execute(insert/update(...)) sends no per-row signals, as QuerySet.update()."""
    seen: list[str] = []

    async def after(sender: type[User], payload: PostSave[User]) -> None:
        seen.append(payload.instance.email)

    listen(post_save, after, User)
    async with db.transaction() as session:
        await session.execute(sa.insert(User), [{"email": "a@x"}, {"email": "b@x"}])
        await session.execute(sa.update(User).values(name="bulk"))
    assert seen == []


async def test_a_post_save_loop_is_stopped_by_max_depth(db: Database, listen: Listen) -> None:
    """A post_save receiver that adds a new User per User saved hits RecursionDepthError."""

    async def breed(sender: type[User], payload: PostSave[User]) -> None:
        session = async_object_session(payload.instance)
        assert session is not None
        session.add(User(email=f"{payload.instance.email}+"))

    listen(post_save, breed, User)
    with pytest.raises(RecursionDepthError, match="max_depth=8"):
        async with db.transaction() as session:
            session.add(User(email="a"))
    assert await _emails(db) == []


async def test_a_receiver_flushing_the_session_gets_a_clear_error(
    db: Database, listen: Listen
) -> None:
    """A receiver that flushes the session sending it gets NestedFlushError saying what to do."""

    async def flushes(sender: type[User], payload: PostSave[User]) -> None:
        session = async_object_session(payload.instance)
        assert session is not None
        session.add(Profile(user_id=payload.instance.id))
        await session.flush()

    listen(post_save, flushes, User)
    with pytest.raises(NestedFlushError, match=r"session\.add\(\)"):
        async with db.transaction() as session:
            session.add(User(email="a@x"))


async def test_repository_writes_are_signalled_once(db: Database, listen: Listen) -> None:
    """A repository's write in an instrumented transaction sends its signals once."""
    seen: list[tuple[str, Any]] = []

    async def after(sender: type[User], payload: PostSave[User]) -> None:
        seen.append((payload.instance.email, payload.previous))

    listen(post_save, after, User)
    users = SQLAlchemyRepository(User, db)
    async with db.transaction() as session:
        await users.add(User(email="repo@x"))
        session.add(User(email="session@x"))
    assert seen == [("repo@x", None), ("session@x", None)]


async def test_a_pre_save_receiver_that_raises_vetoes_the_flush(
    db: Database, listen: Listen
) -> None:
    """pre_save raising stops the flush before any SQL: the transaction writes nothing."""

    async def veto(sender: type[User], payload: PreSave[User]) -> None:
        raise PermissionError(f"no {payload.instance.email}")

    listen(pre_save, veto, User)
    with pytest.raises(PermissionError, match="no vetoed@x"):
        async with db.transaction() as session:
            session.add(User(email="vetoed@x"))
    assert await _emails(db) == []


async def test_previous_is_none_on_the_repository_path(db: Database, listen: Listen) -> None:
    """A repository update reports previous=None: it writes a statement, not a history."""
    payloads: list[PostSave[User]] = []

    async def after(sender: type[User], payload: PostSave[User]) -> None:
        payloads.append(payload)

    users = SQLAlchemyRepository(User, db)
    user = await users.add(User(email="a@x", name="Ann"))
    listen(post_save, after, User)
    user.name = "Anna"
    await users.save(user)
    assert [(p.created, p.update_fields, p.previous) for p in payloads] == [(False, None, None)]


async def test_a_database_over_an_existing_engine_leaves_it_to_its_owner(tmp_path: Path) -> None:
    """Database(engine) uses the app's engine as is, and dispose() does not close it."""
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'own.db'}")
    try:
        async with Database(engine, name="own") as db:
            assert db.engine is engine
            await db.create_all(Base.metadata)
            async with db.transaction() as session:
                session.add(User(email="own@x"))
        # Not disposed by us: the pooled connection is still there.
        assert "Connections in pool: 1" in engine.pool.status()
        async with engine.connect() as connection:
            assert (await connection.scalar(sa.select(User.email))) == "own@x"
        with pytest.raises(TypeError, match="existing engine"):
            Database(engine, pool_size=3)
    finally:
        await engine.dispose()


async def test_capture_sees_a_sessions_saves_with_no_receiver_connected(db: Database) -> None:
    """aiosignals.testing.capture() records a flush's post_save even when nobody receives it."""
    from aiosignals.testing import capture

    with capture(post_save, sender=User) as sent:
        async with db.transaction() as session:
            session.add(User(email="seen@x"))
    assert [(p.instance.email, p.created) for p in sent.payloads] == [("seen@x", True)]


async def test_a_repository_write_from_a_flush_receiver_is_a_clear_error_not_a_hang(
    db: Database, listen: Listen
) -> None:
    """A flush's post_save receiver writing through a repository gets NestedFlushError."""
    import anyio

    profiles = SQLAlchemyRepository(Profile, db)

    async def create_profile(sender: type[User], payload: PostSave[User]) -> None:
        await profiles.add(Profile(user_id=payload.instance.id))

    listen(post_save, create_profile, User)
    with anyio.fail_after(10), pytest.raises(NestedFlushError, match=r"session\.add\(\)"):
        async with db.transaction() as session:
            session.add(User(email="a@x"))
    assert await _emails(db) == []


def _phase_log(listen: Listen) -> list[str]:
    """Connect AFTER_COMMIT and AFTER_ROLLBACK receivers of User that log what they see."""
    log: list[str] = []

    async def after_commit(sender: type[User], payload: PostSave[User]) -> None:
        log.append(f"committed {payload.instance.email}")

    async def after_rollback(sender: type[User], payload: PostSave[User]) -> None:
        log.append(f"rolled back {payload.instance.email}")

    listen(post_save, after_commit, User, phase=Phase.AFTER_COMMIT)
    listen(post_save, after_rollback, User, phase=Phase.AFTER_ROLLBACK)
    return log


@contextmanager
def _cancelled_on(db: Database, what: str, scope: anyio.CancelScope) -> Iterator[list[str]]:
    """Cancel *scope* from the engine's *what* event: just before the driver's statement."""
    seen: list[str] = []

    def cancel(connection: object) -> None:
        # Fired just before the driver's COMMIT (or ROLLBACK): the cancellation lands on
        # the task while it awaits the statement's reply.
        seen.append(what)
        scope.cancel()

    event.listen(db.engine.sync_engine, what, cancel)
    try:
        yield seen
    finally:
        event.remove(db.engine.sync_engine, what, cancel)


@pytest.mark.parametrize("how", ["session.commit()", "session.begin()", "maker.begin()"])
async def test_an_applications_commit_cancelled_in_flight_follows_the_database(
    db: Database, listen: Listen, how: str
) -> None:
    """Cancelled while its own COMMIT is in flight, a committed row runs AFTER_COMMIT only."""
    log = _phase_log(listen)
    maker = instrument(async_sessionmaker(db.engine, expire_on_commit=False))
    scope = anyio.CancelScope()
    with _cancelled_on(db, "commit", scope) as seen, scope:
        if how == "maker.begin()":
            async with maker.begin() as session:
                session.add(User(email="kept@x"))
            log.append("the block went on")
        else:
            async with maker() as session:
                if how == "session.commit()":
                    session.add(User(email="kept@x"))
                    await session.commit()
                else:
                    async with session.begin():
                        session.add(User(email="kept@x"))
                log.append("the block went on")
    assert seen == ["commit"]
    assert scope.cancelled_caught  # the cancellation is still delivered, by the commit itself
    assert log == ["committed kept@x"]
    assert await _emails(db) == ["kept@x"]


@pytest.mark.parametrize("how", ["session.rollback()", "session.close()"])
async def test_a_rollback_or_close_cancelled_in_flight_runs_after_rollback_only(
    db: Database, listen: Listen, how: str
) -> None:
    """Cancelled while its ROLLBACK is in flight, a flushed row is gone: AFTER_ROLLBACK only."""
    log = _phase_log(listen)
    maker = instrument(async_sessionmaker(db.engine, expire_on_commit=False))
    scope = anyio.CancelScope()
    async with maker() as session:
        session.add(User(email="lost@x"))
        await session.flush()
        with _cancelled_on(db, "rollback", scope) as seen, scope:
            if how == "session.rollback()":
                await session.rollback()
            else:
                await session.close()
            log.append("the block went on")
    assert seen == ["rollback"]
    assert scope.cancelled_caught
    assert log == ["rolled back lost@x"]
    assert await _emails(db) == []


async def test_a_commit_cancelled_in_its_before_commit_receivers_commits_nothing(
    db: Database, listen: Listen
) -> None:
    """Cancelled in a BEFORE_COMMIT receiver, session.commit() sends no COMMIT and rolls back."""
    log = _phase_log(listen)
    scope = anyio.CancelScope()

    async def cancels(sender: type[User], payload: PostSave[User]) -> None:
        scope.cancel()
        await anyio.lowlevel.checkpoint()

    listen(post_save, cancels, User, phase=Phase.BEFORE_COMMIT)
    maker = instrument(async_sessionmaker(db.engine, expire_on_commit=False))
    with _cancelled_on(db, "commit", anyio.CancelScope()) as commits:
        async with maker() as session:
            with scope:
                session.add(User(email="lost@x"))
                await session.commit()
            assert scope.cancelled_caught
    assert commits == []
    assert log == ["rolled back lost@x"]
    assert await _emails(db) == []


async def test_before_commit_receivers_run_at_the_commit_not_at_a_savepoints_release(
    db: Database, listen: Listen
) -> None:
    """Releasing a begin_nested() savepoint is no COMMIT: BEFORE_COMMIT waits for the real one."""
    log: list[str] = []

    async def before_commit(sender: type[User], payload: PostSave[User]) -> None:
        log.append(f"before commit {payload.instance.email}")

    listen(post_save, before_commit, User, phase=Phase.BEFORE_COMMIT)
    maker = instrument(async_sessionmaker(db.engine, expire_on_commit=False))
    async with maker() as session:
        async with session.begin():
            session.add(User(email="outer@x"))
            await session.flush()
            async with session.begin_nested():
                session.add(User(email="inner@x"))
            log.append("released")
        assert log == ["released", "before commit outer@x", "before commit inner@x"]
    assert await _emails(db) == ["outer@x", "inner@x"]
