"""The models, receivers and narrated run of ``aiosignals demo`` (needs SQLAlchemy)."""

from __future__ import annotations

import contextlib
import sys

from sqlalchemy import ForeignKey, select
from sqlalchemy.orm import DeclarativeBase, Mapped, MappedAsDataclass, mapped_column

from ._options import Phase
from .models import PostSave, post_save
from .sqlalchemy import Database, SQLAlchemyRepository

__all__ = ["Profile", "RolledBackError", "User", "scenario"]


class Base(MappedAsDataclass, DeclarativeBase):
    """The demo's own declarative base, so its tables never mix with an application's."""


class User(Base):
    """A user of the demo."""

    __tablename__ = "demo_users"
    id: Mapped[int | None] = mapped_column(primary_key=True, init=False, default=None)
    email: Mapped[str] = mapped_column(unique=True)
    name: Mapped[str] = mapped_column(default="")


class Profile(Base):
    """The profile that ``create_user_profile`` makes for each new user."""

    __tablename__ = "demo_profiles"
    id: Mapped[int | None] = mapped_column(primary_key=True, init=False, default=None)
    user_id: Mapped[int] = mapped_column(ForeignKey("demo_users.id"))
    bio: Mapped[str] = mapped_column(default="")


class RolledBackError(Exception):
    """Raised inside a transaction of the demo to roll it back."""


async def scenario(url: str) -> int:
    """Run the seed scenario on the database at *url*; return the exit status."""
    ran: list[str] = []

    async def log_user_creation(sender: type[User], payload: PostSave[User]) -> None:
        if payload.created:
            ran.append(f"log_user_creation ({payload.instance.email} created)")
        elif payload.previous is not None:
            # From a session's flush: what changed, and what it was (Django needs
            # django-model-utils' FieldTracker for that).
            ran.append(
                f"log_user_creation (nothing to log: {payload.instance.email} updated,"
                f" {sorted(payload.update_fields or ())} were {payload.previous})"
            )
        else:
            ran.append(f"log_user_creation (nothing to log: {payload.instance.email} updated)")

    async def create_user_profile(sender: type[User], payload: PostSave[User]) -> None:
        if payload.created:
            assert payload.instance.id is not None
            await profiles.add(Profile(user_id=payload.instance.id))
            ran.append("create_user_profile, after commit (profile created)")

    async with Database(url) as db:
        # Start from empty tables so a --db pointed at a database seen before still works.
        async with db.engine.begin() as connection:
            await connection.run_sync(Base.metadata.drop_all)
        await db.create_all(Base.metadata)
        users = SQLAlchemyRepository(User, db)
        profiles = SQLAlchemyRepository(Profile, db)
        post_save.connect(log_user_creation, sender=User)
        post_save.connect(create_user_profile, sender=User, phase=Phase.AFTER_COMMIT)
        failures: list[str] = []

        def step(title: str) -> None:
            print(f"- {title}")
            for name in ran or ["no receiver ran"]:
                print(f"    {name}")
            ran.clear()

        print(f"aiosignals demo on {db.url.render_as_string(hide_password=True)}\n")
        print("post_save receivers: log_user_creation (during the save),")
        print("                     create_user_profile (phase=AFTER_COMMIT)\n")
        try:
            alice = await users.add(User(email="alice@example.com"))
            step("add alice@example.com")
            bob = await users.add(User(email="bob@example.com"))
            step("add bob@example.com")

            alice.name = "Alice"
            await users.save(alice, update_fields=["name"])
            step("save alice, update_fields=['name'] (an update: created=False)")

            async with db.transaction():
                carol = await users.add(User(email="carol@example.com"))
                if any("create_user_profile" in name for name in ran):
                    failures.append("an after-commit receiver ran before the commit")
                ran.append(
                    "... still inside the transaction: no profile yet, it waits for the commit"
                )
            step("add carol@example.com inside `async with db.transaction()`")

            # The application's own session: no repository, session.add() as usual. The
            # session of db.transaction() is instrumented, so its flush sends post_save.
            async with db.transaction() as session:
                session.add(User(email="dave@example.com"))
                ran.append("... session.add() only: the flush at the commit sends post_save")
            step("add dave@example.com with session.add() in `db.transaction() as session`")

            async with db.transaction() as session:
                dave = await session.scalar(select(User).where(User.email == "dave@example.com"))
                assert dave is not None
                dave.name = "Dave"
            step("rename dave through the session (its flush sends what changed)")

            with contextlib.suppress(RolledBackError):
                async with db.transaction():
                    await users.add(User(email="mallory@example.com"))
                    raise RolledBackError
            if any("create_user_profile" in name for name in ran):
                failures.append("an after-commit receiver ran for a rolled-back save")
            else:
                ran.append("... rolled back: no after-commit receiver ran")
            step("add mallory@example.com, then the transaction rolls back")
            if await users.list(email="mallory@example.com"):
                failures.append("the rolled-back user was written")

            everyone = await users.list()
            owned = sorted(p.user_id for p in await profiles.list())
            expected = sorted(u.id for u in everyone if u.id is not None)
            if owned != expected:
                failures.append(f"profiles belong to users {owned}, expected {expected}")
            if {u.email for u in everyone} != {
                "alice@example.com",
                "bob@example.com",
                "carol@example.com",
                "dave@example.com",
            }:
                failures.append("the users are not alice, bob, carol and dave")
            del bob, carol
        finally:
            post_save.disconnect(log_user_creation, sender=User)
            post_save.disconnect(create_user_profile, sender=User)

        print()
        print(
            f"Summary: {len(everyone)} users, {len(owned)} profiles (one per committed user);"
            " the rolled-back save fired no after-commit receiver."
            if not failures
            else "Summary: FAILED"
        )
        for failure in failures:
            print(f"  ! {failure}", file=sys.stderr)
        return 1 if failures else 0
