"""
The seed scenario with a real database: log each new user, create its profile after commit.

    python examples/post_save_profile.py
    DATABASE_URL=postgresql+asyncpg://user@localhost/app python examples/post_save_profile.py

Without ``DATABASE_URL`` it uses an in-memory SQLite database. It starts from empty tables of
its own, ``post_save_profile_users`` and ``post_save_profile_profiles`` (dropped and created
again at each run, so it can run any number of times on one database), plus the outbox table
``aiosignals_outbox`` that ``db.create_all`` creates alongside them.
"""

from __future__ import annotations

import contextlib
import logging
import os

import anyio
from sqlalchemy import ForeignKey
from sqlalchemy.orm import DeclarativeBase, Mapped, MappedAsDataclass, mapped_column

from aiosignals import Phase, receiver
from aiosignals.models import PostSave, post_save
from aiosignals.repository.sqlalchemy import Database, SQLAlchemyRepository

log = logging.getLogger("example")


class Base(MappedAsDataclass, DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "post_save_profile_users"
    id: Mapped[int | None] = mapped_column(primary_key=True, init=False, default=None)
    email: Mapped[str] = mapped_column(unique=True)


class Profile(Base):
    __tablename__ = "post_save_profile_profiles"
    id: Mapped[int | None] = mapped_column(primary_key=True, init=False, default=None)
    user_id: Mapped[int] = mapped_column(ForeignKey("post_save_profile_users.id"))


db = Database(os.environ.get("DATABASE_URL", "sqlite+aiosqlite://"))
users = SQLAlchemyRepository(User, db)
profiles = SQLAlchemyRepository(Profile, db)


@receiver(post_save, sender=User)
async def log_user_creation(sender: type[User], payload: PostSave[User]) -> None:
    if payload.created:
        log.info("user %s created", payload.instance.email)


@receiver(post_save, sender=User, phase=Phase.AFTER_COMMIT)
async def create_user_profile(sender: type[User], payload: PostSave[User]) -> None:
    # After the commit: a rolled-back user never gets a profile.
    if payload.created and payload.instance.id is not None:
        await profiles.add(Profile(user_id=payload.instance.id))


async def main() -> None:
    async with db:
        # Its own tables only, from empty: a second run on the same database works too.
        async with db.engine.begin() as connection:
            await connection.run_sync(Base.metadata.drop_all)
        await db.create_all(Base.metadata)
        print(f"tables {', '.join(Base.metadata.tables)} (new) and aiosignals_outbox on {db!r}")
        alice = await users.add(User(email="alice@example.com"))
        async with db.transaction():
            bob = await users.add(User(email="bob@example.com"))
        with contextlib.suppress(LookupError):
            async with db.transaction():
                await users.add(User(email="mallory@example.com"))
                raise LookupError("roll back: mallory is not welcome")

        owners = sorted(p.user_id for p in await profiles.list())
        assert owners == [alice.id, bob.id], owners
        print(f"{len(await users.list())} users, profiles for users {owners}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    anyio.run(main)
