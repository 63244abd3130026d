"""
Signals across processes: a FastAPI app saves users, a worker process creates their profiles.

The app's ``post_save`` receiver sends ``user_created``; the Redis transport forwards that
signal through the durable outbox, so the event is stored in the request's transaction and
the app's outbox relay publishes it to Redis Streams after the commit. The worker, another
process, consumes the stream and creates the profile, idempotently: delivery is at least once.

    python examples/redis_profiles.py web [PORT]   # the app, with its outbox relay
    python examples/redis_profiles.py worker       # a consumer; run as many as you like
    python examples/redis_profiles.py --check      # both, a few requests, then stop

``REDIS_URL`` (default ``redis://localhost:6379/0``) and ``DATABASE_URL`` (default a SQLite
file ``redis_profiles.db`` in the current directory) must be the same for web and workers;
``eval "$(scripts/services.sh start .services)"`` exports both for a private redis-server and
PostgreSQL. Each role stops at once, saying so, if Redis is unreachable.

Tables: ``redis_profiles_users``, ``redis_profiles_profiles`` and the outbox table
``aiosignals_outbox``, created if missing; --check first drops its own two, so it runs any
number of times on one database.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import httpx
import redis.asyncio as aioredis
import uvicorn
from fastapi import FastAPI, HTTPException
from redis.exceptions import RedisError
from sqlalchemy import ForeignKey
from sqlalchemy.orm import DeclarativeBase, Mapped, MappedAsDataclass, mapped_column

from aiosignals import Event, Signal, receiver
from aiosignals.integrations.fastapi import lifespan, transaction_dependency
from aiosignals.models import PostSave, post_save
from aiosignals.outbox import OutboxRelay
from aiosignals.repository import IntegrityError
from aiosignals.repository.sqlalchemy import Database, SQLAlchemyRepository
from aiosignals.transports import RedisStreamTransport, current_message

log = logging.getLogger("redis_profiles")

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
DATABASE_URL = os.environ.get("DATABASE_URL", "sqlite+aiosqlite:///redis_profiles.db")
STREAM_PREFIX = os.environ.get("STREAM_PREFIX", "aiosignals:")


class Base(MappedAsDataclass, DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "redis_profiles_users"
    id: Mapped[int | None] = mapped_column(primary_key=True, init=False, default=None)
    email: Mapped[str] = mapped_column(unique=True)


class Profile(Base):
    __tablename__ = "redis_profiles_profiles"
    id: Mapped[int | None] = mapped_column(primary_key=True, init=False, default=None)
    user_id: Mapped[int] = mapped_column(ForeignKey("redis_profiles_users.id"), unique=True)


class UserCreated(Event):
    user_id: int
    email: str


user_created = Signal(UserCreated, name="examples.user_created")

db = Database(DATABASE_URL)
users = SQLAlchemyRepository(User, db)
profiles = SQLAlchemyRepository(Profile, db)
transport = RedisStreamTransport(REDIS_URL, stream_prefix=STREAM_PREFIX)


def shown(url: str) -> str:
    """*url* as it may be printed: without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()


async def require_redis() -> None:
    """Stop at once, saying where, if Redis cannot be reached (instead of retrying forever)."""
    client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        await client.ping()
    except (OSError, RedisError) as exc:
        raise SystemExit(
            f"redis_profiles: Redis is unreachable at {shown(REDIS_URL)} ({exc});"
            " start redis-server or set REDIS_URL"
        ) from None
    finally:
        await client.aclose()


async def create_tables(*, fresh: bool = False) -> None:
    """Create the example's tables if missing; *fresh*: drop its own two first."""
    if fresh:
        async with db.engine.begin() as connection:
            await connection.run_sync(Base.metadata.drop_all)
    await db.create_all(Base.metadata)
    log.info(
        "tables %s%s and aiosignals_outbox on %r",
        ", ".join(Base.metadata.tables),
        " (dropped and created again)" if fresh else "",
        db,
    )


@receiver(post_save, sender=User)
async def announce_user(sender: type[User], payload: PostSave[User]) -> None:
    # Inside the request's transaction: the forwarded send becomes an outbox row there.
    if payload.created and payload.instance.id is not None:
        await user_created.send(User, user_id=payload.instance.id, email=payload.instance.email)


async def create_profile(sender: type[User], payload: UserCreated) -> None:
    """The worker's receiver: safe to run twice for the same event."""
    message = current_message()
    if await profiles.list(user_id=payload.user_id):
        log.info("profile of user %s exists (redelivery %s)", payload.user_id, message)
        return
    await profiles.add(Profile(user_id=payload.user_id))
    log.info("profile created for %s", payload.email)


@asynccontextmanager
async def app_lifespan(app: FastAPI) -> AsyncGenerator[None]:
    relay = OutboxRelay(db, poll_interval=0.05)
    async with transport, lifespan(services=[relay])(app):
        transport.forward(user_created)
        try:
            yield
        finally:
            transport.unforward(user_created)


app = FastAPI(lifespan=app_lifespan)


@app.post("/users", status_code=201, dependencies=[transaction_dependency(db)])
async def create_user(email: str) -> dict[str, int | None]:
    try:
        user = await users.add(User(email=email))
    except IntegrityError:
        raise HTTPException(409, f"{email} is already registered") from None
    return {"id": user.id}


@app.get("/users/{user_id}")
async def read_user(user_id: int) -> dict[str, object]:
    user = await users.get(user_id)
    if user is None:
        raise HTTPException(404, f"no user {user_id}")
    has_profile = bool(await profiles.list(user_id=user_id))
    return {"id": user.id, "email": user.email, "has_profile": has_profile}


async def worker() -> None:
    await require_redis()
    await create_tables()
    user_created.connect(create_profile)
    async with transport:
        consumer = transport.consumer([user_created], consumer=f"worker-{os.getpid()}", block=0.2)
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with anyio.create_task_group() as group:

                async def stop_on_signal() -> None:
                    async for _ in signals:
                        consumer.stop()
                        return

                group.start_soon(stop_on_signal)
                log.info("worker consuming %s", transport.stream_name(user_created))
                await consumer.run()
                group.cancel_scope.cancel()
    await db.dispose()


async def check() -> None:
    """Start a worker process, create users through the app, wait for their profiles."""
    await require_redis()
    await create_tables(fresh=True)
    worker_process = subprocess.Popen([sys.executable, __file__, "worker"])  # noqa: ASYNC220
    try:
        transport_ = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport_, base_url="http://app") as client,
        ):
            ids = []
            for email in ("ada@example.com", "grace@example.com"):
                response = await client.post("/users", params={"email": email})
                assert response.status_code == 201, response.text
                ids.append(response.json()["id"])
            duplicate = await client.post("/users", params={"email": "ada@example.com"})
            assert duplicate.status_code == 409
            with anyio.fail_after(30):
                for user_id in ids:
                    # Another process does the work: polling the API is all a client can do.
                    while not (await client.get(f"/users/{user_id}")).json()["has_profile"]:  # noqa: ASYNC110
                        await anyio.sleep(0.05)
        assert len(await profiles.list()) == 2  # none for the rolled-back duplicate
        print(f"profiles created by the worker for users {ids}")
    finally:
        worker_process.send_signal(signal.SIGTERM)
        assert await anyio.to_thread.run_sync(worker_process.wait, 20) == 0
        await db.dispose()


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format=f"[{os.getpid()}] %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    role = argv[0] if argv else "--check"
    if role == "worker":
        anyio.run(worker)
    elif role == "web":
        anyio.run(require_redis)
        uvicorn.run(app, host="127.0.0.1", port=int(argv[1]) if len(argv) > 1 else 8000)
    elif role == "--check":
        anyio.run(check)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    if "--check" in sys.argv and "DATABASE_URL" not in os.environ:
        # A throwaway database shared by this process and the worker it starts.
        directory = tempfile.mkdtemp(prefix="redis-profiles-")
        os.environ["DATABASE_URL"] = f"sqlite+aiosqlite:///{Path(directory) / 'app.db'}"
        os.execv(sys.executable, [sys.executable, __file__, *sys.argv[1:]])
    sys.exit(main(sys.argv[1:]))
