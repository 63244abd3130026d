"""
The public API used as a user would, checked by mypy --strict and pyright; never run.

Lines marked ``# type: ignore[...]`` must be rejected: mypy's ``warn_unused_ignores`` and
pyright's ``reportUnnecessaryTypeIgnoreComment`` (turned on for this file by the comment
below) fail the check if one of them ever type-checks, so each proves that both checkers
catch the error.
"""

# pyright: reportUnnecessaryTypeIgnoreComment=true

from __future__ import annotations

from typing import Any, assert_type

from aiosignals import ANY, Concurrent, Connection, Event, Phase, Sequential, Signal, receiver


class UserRegistered(Event):
    user_id: int
    email: str


class OrderPlaced(Event):
    order_id: int


class AccountService:
    pass


user_registered = Signal(UserRegistered, name="user_registered")
assert_type(user_registered, Signal[UserRegistered])
order_placed = Signal(OrderPlaced, mode=Concurrent(limit=4), errors="collect")
assert_type(order_placed, Signal[OrderPlaced])


@receiver(user_registered, sender=AccountService, dispatch_uid="welcome-mail")
async def send_welcome(sender: type[AccountService], payload: UserRegistered) -> str:
    return payload.email


@user_registered.connect
async def audit(sender: Any, payload: UserRegistered) -> None:
    pass


@user_registered.connect(priority=10, phase=Phase.AFTER_COMMIT)
def sync_audit(sender: Any, payload: UserRegistered) -> int:
    return payload.user_id


def accepts_base_event(sender: Any, payload: Event) -> None:
    """A receiver of any Event accepts the payload of every signal (contravariance)."""


user_registered.connect(accepts_base_event, sender=ANY, weak=False)


@user_registered.connect(phase=Phase.AFTER_COMMIT, errors="log")
async def mail_after_commit(sender: Any, payload: UserRegistered) -> None:
    pass


user_registered.connect(audit, errors="ignore")  # type: ignore[call-overload]
assert_type(user_registered.connections, tuple[Connection, ...])
assert_type(user_registered.disconnect(audit, all_senders=True), bool)


async def wrong_payload(sender: Any, payload: OrderPlaced) -> None:
    pass


user_registered.connect(wrong_payload)  # type: ignore[arg-type]


@receiver(user_registered)  # type: ignore[arg-type]
async def wrong_decorated(sender: Any, payload: OrderPlaced) -> None:
    pass


async def main() -> None:
    results = await user_registered.send(AccountService, UserRegistered(user_id=1, email="a@b.c"))
    for fn, result in results:
        print(fn, result)
    await user_registered.send(AccountService, user_id=1, email="a@b.c", mode=Sequential())
    await user_registered.send(AccountService, OrderPlaced(order_id=1))  # type: ignore[arg-type]
    await user_registered.send(AccountService, errors="ignore")  # type: ignore[arg-type]
    with user_registered.muted(send_welcome), user_registered.connected_to(audit):
        pass
    with user_registered.connected_to(wrong_payload):  # type: ignore[arg-type]
        pass
    assert_type(user_registered.has_receivers_for(AccountService), bool)


# -- models and repositories ------------------------------------------------------------

import dataclasses  # noqa: E402 -- kept beside the part of the file that uses it

from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column  # noqa: E402

from aiosignals.models import PostSave, post_save  # noqa: E402
from aiosignals.outbox import OutboxRelay, current_delivery  # noqa: E402
from aiosignals.repository import MemoryRepository, Repository  # noqa: E402
from aiosignals.repository.sqlalchemy import Database, SQLAlchemyRepository  # noqa: E402


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str]


@dataclasses.dataclass
class Note:
    id: int | None
    text: str


@receiver(post_save, sender=User, phase=Phase.AFTER_COMMIT)
async def create_profile(sender: type[User], payload: PostSave[User]) -> None:
    assert_type(payload.instance, User)
    assert_type(payload.created, bool)
    assert_type(payload.update_fields, frozenset[str] | None)


@receiver(post_save, sender=User)  # type: ignore[arg-type]
async def not_a_model_receiver(sender: Any, payload: UserRegistered) -> None:
    pass


async def repositories() -> None:
    db = Database("sqlite+aiosqlite://")
    users = SQLAlchemyRepository(User, db)
    assert_type(users, SQLAlchemyRepository[User])
    assert_type(await users.get(1), User | None)
    assert_type(await users.list(limit=10, email="a@b.c"), list[User])
    user = await users.save(User(email="a@b.c"), update_fields=["email"])
    assert_type(user, User)
    await users.add(Note(id=None, text="x"))  # type: ignore[arg-type]
    notes: Repository[Note] = MemoryRepository(Note)
    assert_type(await notes.add(Note(id=None, text="x")), Note)
    async with db.transaction() as session:
        await session.flush()
    relay = OutboxRelay(db, batch_size=100)
    assert_type(await relay.run_once(), int)
    delivery = current_delivery()
    if delivery is not None:
        assert_type(delivery.id, int)
        assert_type(delivery.key, str)


# -- instrumented sessions --------------------------------------------------------------

from sqlalchemy.ext.asyncio import (  # noqa: E402
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from aiosignals import sqlalchemy as aiosignals_sqlalchemy  # noqa: E402


async def sessions() -> None:
    engine = create_async_engine("sqlite+aiosqlite://")
    maker = aiosignals_sqlalchemy.instrument(async_sessionmaker(engine))
    assert_type(maker, async_sessionmaker[AsyncSession])
    db = aiosignals_sqlalchemy.Database(engine, name="app")
    assert_type(db.sessionmaker, async_sessionmaker[AsyncSession])
    async with db.transaction() as session:
        assert_type(session, AsyncSession)
        session.add(User(email="a@b.c"))
    aiosignals_sqlalchemy.instrument(engine)  # type: ignore[arg-type]


@receiver(post_save, sender=User)
async def changed(sender: type[User], payload: PostSave[User]) -> None:
    assert_type(payload.previous, dict[str, Any] | None)
