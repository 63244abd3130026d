"""
Models and durable receivers for the outbox's data tests: delivery ids, floats, bytes.

Each receiver appends ``(delivery, payload)`` to ``RECEIVED`` so that a test can compare
what the relay delivered with what was saved.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from sqlalchemy import LargeBinary, PickleType
from sqlalchemy.orm import DeclarativeBase, Mapped, MappedAsDataclass, mapped_column

from aiosignals import Event, Signal, receiver
from aiosignals.models import PostSave, post_save
from aiosignals.outbox import Delivery, current_delivery


class Base(MappedAsDataclass, DeclarativeBase):
    pass


class Member(Base):
    __tablename__ = "data_members"
    id: Mapped[int | None] = mapped_column(primary_key=True, init=False, default=None)
    email: Mapped[str]


class Reading(Base):
    __tablename__ = "data_readings"
    id: Mapped[int | None] = mapped_column(primary_key=True, init=False, default=None)
    value: Mapped[float]


class Blob(Base):
    __tablename__ = "data_blobs"
    id: Mapped[int | None] = mapped_column(primary_key=True, init=False, default=None)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Pickled(Base):
    __tablename__ = "data_pickled"
    id: Mapped[int | None] = mapped_column(primary_key=True, init=False, default=None)
    thing: Mapped[Any] = mapped_column(PickleType)


class Point(BaseModel):
    """A nested model that is not an Event: pydantic's default config."""

    x: float


class Measured(Event):
    value: float
    where: Point | None = None
    series: tuple[float, ...] = ()
    named: dict[str, float] = {}  # noqa: RUF012 -- pydantic copies field defaults
    raw: bytes = b""


measured = Signal(Measured, name="tests.outbox.data.measured")

RECEIVED: list[tuple[Delivery, Any]] = []
"""(delivery, payload) of each delivery to a receiver of this module."""

WELCOMED: dict[int, str] = {}
"""The README's pattern: one welcome mail per delivery id."""


@receiver(post_save, sender=Member, durable=True, dispatch_uid="tests.outbox.data.welcome")
async def welcome(sender: type[Member], payload: PostSave[Member]) -> None:
    delivery = current_delivery()
    assert delivery is not None
    RECEIVED.append((delivery, payload))
    WELCOMED.setdefault(delivery.id, payload.instance.email)  # idempotent by delivery id


async def record(sender: Any, payload: Any) -> None:
    delivery = current_delivery()
    assert delivery is not None
    RECEIVED.append((delivery, payload))


for _model in (Reading, Blob, Pickled):
    post_save.connect(
        record,
        sender=_model,
        durable=True,
        dispatch_uid=f"tests.outbox.data.{_model.__name__.lower()}",
    )
measured.connect(record, durable=True, dispatch_uid="tests.outbox.data.measured")
