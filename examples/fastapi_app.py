"""
The seed scenario behind HTTP, with FastAPI.

``POST /users`` adds a user to the request's session (``session.add()``, as any FastAPI app
writes: the session is instrumented, so its flush sends ``post_save``); a receiver with
``phase=Phase.AFTER_COMMIT`` creates its profile once that commits (never for a request that
fails) and publishes a ``UserSignedUp`` event to the app's EventBus, whose worker sends the
welcome mail in the background. ``GET /users/{id}`` returns the user with its profile,
``GET /stats`` what the bus did.

    python examples/fastapi_app.py [PORT]     # serve on 127.0.0.1:PORT (or $PORT, else 8000)
    python examples/fastapi_app.py --check    # serve on a free port, make requests, exit 0

The database is ``$DATABASE_URL`` (e.g. ``postgresql+asyncpg://user@localhost/app``), else a
SQLite file: ``fastapi_app.db`` in the current directory, or a temporary one with --check. The
app creates its tables ``fastapi_app_users`` and ``fastapi_app_profiles`` (and the outbox table
``aiosignals_outbox``) if they are missing; --check first drops its own two, so it runs any
number of times on one database.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations at run
# time, and the session's dependency names the app's own database, a local of create_app().
import contextlib
import logging
import os
import socket
import sys
import tempfile
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import anyio
import httpx
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel
from sqlalchemy import ForeignKey
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, MappedAsDataclass, mapped_column

from aiosignals import Event, EventBus, Phase, Signal
from aiosignals.integrations.fastapi import DepBus, lifespan, transaction_dependency
from aiosignals.models import PostSave, post_save
from aiosignals.sqlalchemy import Database, SQLAlchemyRepository

log = logging.getLogger("example")


class Base(MappedAsDataclass, DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "fastapi_app_users"
    id: Mapped[int | None] = mapped_column(primary_key=True, init=False, default=None)
    email: Mapped[str] = mapped_column(unique=True)
    name: Mapped[str]


class Profile(Base):
    __tablename__ = "fastapi_app_profiles"
    id: Mapped[int | None] = mapped_column(primary_key=True, init=False, default=None)
    user_id: Mapped[int] = mapped_column(ForeignKey("fastapi_app_users.id"), unique=True)
    display_name: Mapped[str]


class UserSignedUp(Event):
    user_id: int
    email: str


user_signed_up = Signal(UserSignedUp, name="examples.fastapi_app.user_signed_up")


class NewUser(BaseModel):
    email: str
    name: str


class ProfileOut(BaseModel):
    display_name: str


class UserOut(BaseModel):
    id: int
    email: str
    name: str
    profile: ProfileOut | None


class Stats(BaseModel):
    delivered: int
    failed: int
    pending: int
    welcome_mails: list[str]


def create_app(database_url: str) -> FastAPI:
    """Build the app on the database at *database_url* (its tables are created at startup)."""
    db = Database(database_url)
    users = SQLAlchemyRepository(User, db)
    profiles = SQLAlchemyRepository(Profile, db)
    # A bus runs once: the lifespan makes a new one at each startup (an app may start
    # again, as in tests), starts it, and drains it at shutdown.
    bus: EventBus | None = None

    def new_bus() -> EventBus:
        nonlocal bus
        bus = EventBus(workers=2)
        return bus

    welcome_mails: list[str] = []

    async def create_profile(sender: type[User], payload: PostSave[User]) -> None:
        # AFTER_COMMIT: the request's transaction has committed; a failed request never
        # gets here. The profile is written in a transaction of its own.
        user = payload.instance
        if payload.created and user.id is not None and bus is not None:
            async with db.transaction() as session:
                session.add(Profile(user_id=user.id, display_name=user.name.title()))
            await bus.publish(user_signed_up, User, UserSignedUp(user_id=user.id, email=user.email))

    async def send_welcome_mail(sender: type[User], payload: UserSignedUp) -> None:
        # Runs in a bus worker, after the response: slow I/O stays out of the request.
        await anyio.sleep(0.01)
        welcome_mails.append(payload.email)

    @asynccontextmanager
    async def app_lifespan(app: FastAPI) -> AsyncGenerator[dict[str, Any]]:
        async with db:
            await db.create_all(Base.metadata)
            log.info("tables %s and aiosignals_outbox on %r", ", ".join(Base.metadata.tables), db)
            # Connected for the app's lifetime only, so that two apps (tests) never share.
            post_save.connect(create_profile, sender=User, phase=Phase.AFTER_COMMIT)
            user_signed_up.connect(send_welcome_mail)
            try:
                # The lifespan state holds the bus: yielded on, DepBus finds it (in mounted
                # sub-apps too).
                async with lifespan(new_bus)(app) as state:
                    yield state
            finally:
                post_save.disconnect(create_profile, sender=User)
                user_signed_up.disconnect(send_welcome_mail)
                if bus is not None:
                    log.info(
                        "shutdown: bus delivered=%d failed=%d undelivered=%d welcome_mails=%d",
                        bus.delivered,
                        bus.failed,
                        len(bus.undelivered),
                        len(welcome_mails),
                    )

    app = FastAPI(title="aiosignals example", lifespan=app_lifespan)
    app.state.welcome_mails = welcome_mails

    # The handler runs in a transaction that commits before the response is sent; the
    # dependency hands it the transaction's (instrumented) session.
    @app.post("/users", status_code=201)
    async def create_user(
        new: NewUser, session: Annotated[AsyncSession, transaction_dependency(db)]
    ) -> UserOut:
        user = User(email=new.email, name=new.name)
        session.add(user)
        try:
            await session.flush()  # the INSERT, and post_save: the 409 needs its outcome
        except IntegrityError:
            # Raised, not returned: the dependency rolls the request's transaction back.
            raise HTTPException(409, f"{new.email} is already registered") from None
        assert user.id is not None
        # The profile does not exist yet: it is created once this transaction commits.
        return UserOut(id=user.id, email=user.email, name=user.name, profile=None)

    @app.get("/users/{user_id}")
    async def read_user(user_id: int) -> UserOut:
        user = await users.get(user_id)
        if user is None or user.id is None:
            raise HTTPException(404, f"no user {user_id}")
        found = await profiles.list(user_id=user_id)
        profile = ProfileOut(display_name=found[0].display_name) if found else None
        return UserOut(id=user.id, email=user.email, name=user.name, profile=profile)

    @app.get("/stats")
    async def stats(bus: DepBus) -> Stats:
        return Stats(
            delivered=bus.delivered,
            failed=bus.failed,
            pending=bus.pending,
            welcome_mails=welcome_mails,
        )

    return app


def free_port() -> int:
    """Return a TCP port on the loopback interface that is free right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def drop_tables(database_url: str) -> None:
    """Drop this example's own tables (nothing else), so that --check starts from empty ones."""
    async with Database(database_url) as db, db.engine.begin() as connection:
        await connection.run_sync(Base.metadata.drop_all)
    print(f"--check starts from empty tables: dropped {', '.join(Base.metadata.tables)}")


async def check(database_url: str) -> None:
    """Serve the app with uvicorn on a free loopback port, exercise it over HTTP, stop it."""
    await drop_tables(database_url)
    app = create_app(database_url)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    async with anyio.create_task_group() as group:
        group.start_soon(server.serve)
        with anyio.fail_after(10):
            while not server.started:  # noqa: ASYNC110 -- uvicorn only exposes a flag
                await anyio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            created = await client.post("/users", json={"email": "ada@example.com", "name": "ada"})
            assert created.status_code == 201, created.text
            user_id = created.json()["id"]
            # Committed before the response was sent: the profile is there already.
            read = await client.get(f"/users/{user_id}")
            assert read.json()["profile"] == {"display_name": "Ada"}, read.text
            duplicate = await client.post("/users", json={"email": "ada@example.com", "name": "x"})
            assert duplicate.status_code == 409, duplicate.text
            print(f"created user {user_id} with profile {read.json()['profile']}")
            print(f"duplicate email: {duplicate.status_code} {duplicate.json()['detail']}")
        server.should_exit = True
    # The lifespan drained the bus on shutdown: the welcome mail went out exactly once.
    assert app.state.welcome_mails == ["ada@example.com"], app.state.welcome_mails
    print(f"welcome mails sent: {app.state.welcome_mails}")


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if "--check" in argv:
        with tempfile.TemporaryDirectory() as tmp:
            default = f"sqlite+aiosqlite:///{Path(tmp) / 'fastapi_app.db'}"
            anyio.run(check, os.environ.get("DATABASE_URL", default))
        print("check passed")
        return
    port = int(argv[0]) if argv else int(os.environ.get("PORT", "8000"))
    app = create_app(os.environ.get("DATABASE_URL", "sqlite+aiosqlite:///fastapi_app.db"))
    # uvicorn re-raises Ctrl-C once it has shut down (and the bus has drained): exit quietly.
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.run(app, host=os.environ.get("HOST", "127.0.0.1"), port=port)


if __name__ == "__main__":
    main(sys.argv[1:])
