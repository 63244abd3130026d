"""
The seed scenario behind HTTP, with aiohttp.

``POST /users`` adds a user to the request's session (``session.add()``: the session is
instrumented, so its flush sends ``post_save``); a receiver with
``phase=Phase.AFTER_COMMIT`` creates its profile once that commits (never for a request that
fails) and publishes a ``UserSignedUp`` event to the app's EventBus, whose worker sends the
welcome mail in the background. ``GET /users/{id}`` returns the user with its profile,
``GET /stats`` what the bus did.

    python examples/aiohttp_app.py [PORT]     # serve on 127.0.0.1:PORT (or $PORT, else 8080)
    python examples/aiohttp_app.py --check    # serve on a free port, make requests, exit 0

The database is ``$DATABASE_URL`` (e.g. ``postgresql+asyncpg://user@localhost/app``), else a
SQLite file: ``aiohttp_app.db`` in the current directory, or a temporary one with --check. The
app creates its tables ``aiohttp_app_users`` and ``aiohttp_app_profiles`` (and the outbox table
``aiosignals_outbox``) if they are missing; --check first drops its own two, so it runs any
number of times on one database.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import anyio
import pydantic
from aiohttp import web
from sqlalchemy import ForeignKey
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, MappedAsDataclass, mapped_column

from aiosignals import Event, EventBus, Phase, Signal
from aiosignals.integrations.aiohttp import (
    get_bus,
    get_session,
    init_app,
    transaction_middleware,
)
from aiosignals.models import PostSave, post_save
from aiosignals.sqlalchemy import Database, SQLAlchemyRepository

log = logging.getLogger("example")


class Base(MappedAsDataclass, DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "aiohttp_app_users"
    id: Mapped[int | None] = mapped_column(primary_key=True, init=False, default=None)
    email: Mapped[str] = mapped_column(unique=True)
    name: Mapped[str]


class Profile(Base):
    __tablename__ = "aiohttp_app_profiles"
    id: Mapped[int | None] = mapped_column(primary_key=True, init=False, default=None)
    user_id: Mapped[int] = mapped_column(ForeignKey("aiohttp_app_users.id"), unique=True)
    display_name: Mapped[str]


class UserSignedUp(Event):
    user_id: int
    email: str


user_signed_up = Signal(UserSignedUp, name="examples.aiohttp_app.user_signed_up")


class NewUser(pydantic.BaseModel):
    email: str
    name: str


WELCOME_MAILS = web.AppKey("welcome_mails", list[str])


def create_app(database_url: str) -> web.Application:
    """Build the app on the database at *database_url* (its tables are created at startup)."""
    db = Database(database_url)
    users = SQLAlchemyRepository(User, db)
    profiles = SQLAlchemyRepository(Profile, db)
    # A bus runs once: init_app() below makes a new one at each startup (an app may start
    # again, as in tests), starts it, and drains it at cleanup.
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

    async def database_and_receivers(app: web.Application) -> AsyncIterator[None]:
        async with db:
            await db.create_all(Base.metadata)
            log.info("tables %s and aiosignals_outbox on %r", ", ".join(Base.metadata.tables), db)
            # Connected for the app's lifetime only, so that two apps (tests) never share.
            post_save.connect(create_profile, sender=User, phase=Phase.AFTER_COMMIT)
            user_signed_up.connect(send_welcome_mail)
            try:
                yield
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

    async def create_user(request: web.Request) -> web.Response:
        try:
            new = NewUser.model_validate(await request.json())
        except (ValueError, pydantic.ValidationError) as error:
            raise web.HTTPBadRequest(text=str(error)) from None
        user = User(email=new.email, name=new.name)
        session = get_session(request)  # the request transaction's instrumented session
        session.add(user)
        try:
            await session.flush()  # the INSERT, and post_save: the 409 needs its outcome
        except IntegrityError:
            # Raised, not returned: the middleware rolls the request's transaction back.
            raise web.HTTPConflict(text=f"{new.email} is already registered") from None
        # The profile does not exist yet: it is created once this transaction commits.
        return web.json_response(
            {"id": user.id, "email": user.email, "name": user.name, "profile": None}, status=201
        )

    async def read_user(request: web.Request) -> web.Response:
        user_id = int(request.match_info["user_id"])
        user = await users.get(user_id)
        if user is None:
            raise web.HTTPNotFound(text=f"no user {user_id}")
        found = await profiles.list(user_id=user_id)
        profile = {"display_name": found[0].display_name} if found else None
        return web.json_response(
            {"id": user.id, "email": user.email, "name": user.name, "profile": profile}
        )

    async def stats(request: web.Request) -> web.Response:
        bus = get_bus(request)
        return web.json_response(
            {
                "delivered": bus.delivered,
                "failed": bus.failed,
                "pending": bus.pending,
                "welcome_mails": request.app[WELCOME_MAILS],
            }
        )

    # POST, PUT, PATCH and DELETE handlers run in a transaction that commits before the
    # response is sent; GET handlers run without one.
    app = web.Application(middlewares=[transaction_middleware(db)])
    app[WELCOME_MAILS] = welcome_mails
    app.cleanup_ctx.append(database_and_receivers)
    init_app(app, bus=new_bus)  # after the database: started after it, stopped before it
    app.router.add_post("/users", create_user)
    app.router.add_get(r"/users/{user_id:\d+}", read_user)
    app.router.add_get("/stats", stats)
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
    """Serve the app on a free loopback port, exercise it over HTTP, stop it."""
    await drop_tables(database_url)
    app = create_app(database_url)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as client:
            body = {"email": "ada@example.com", "name": "ada"}
            async with client.post("/users", json=body) as created:
                assert created.status == 201, await created.text()
                user_id = (await created.json())["id"]
            # Committed before the response was sent: the profile is there already.
            async with client.get(f"/users/{user_id}") as read:
                profile = (await read.json())["profile"]
                assert profile == {"display_name": "Ada"}, profile
            async with client.post("/users", json=body) as duplicate:
                assert duplicate.status == 409, await duplicate.text()
                print(f"created user {user_id} with profile {profile}")
                print(f"duplicate email: {duplicate.status} {await duplicate.text()}")
    finally:
        await runner.cleanup()
    # The cleanup drained the bus: the welcome mail went out exactly once.
    assert app[WELCOME_MAILS] == ["ada@example.com"], app[WELCOME_MAILS]
    print(f"welcome mails sent: {app[WELCOME_MAILS]}")


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    if "--check" in argv:
        with tempfile.TemporaryDirectory() as tmp:
            default = f"sqlite+aiosqlite:///{Path(tmp) / 'aiohttp_app.db'}"
            asyncio.run(check(os.environ.get("DATABASE_URL", default)))
        print("check passed")
        return
    port = int(argv[0]) if argv else int(os.environ.get("PORT", "8080"))
    app = create_app(os.environ.get("DATABASE_URL", "sqlite+aiosqlite:///aiohttp_app.db"))
    # run_app shuts down cleanly on Ctrl-C and SIGTERM: the bus drains during its cleanup.
    web.run_app(app, host=os.environ.get("HOST", "127.0.0.1"), port=port)


if __name__ == "__main__":
    main(sys.argv[1:])
