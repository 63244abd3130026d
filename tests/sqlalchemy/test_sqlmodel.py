"""SQLModel table models signal alike: they are mapped classes (real ``sqlmodel`` package)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import Field, SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession

from aiosignals import Phase
from aiosignals.models import PostSave, post_save
from aiosignals.sqlalchemy import Database, instrument

pytestmark = pytest.mark.anyio


class Hero(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str
    power: str = ""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_sqlmodel_sessions_send_model_signals_with_phases(tmp_path: Path) -> None:
    """An instrumented SQLModel AsyncSession sends post_save at the flush, phases at the commit."""
    log: list[str] = []

    async def saved(sender: type[Hero], payload: PostSave[Hero]) -> None:
        log.append(f"saved {payload.instance.name} created={payload.created}")

    async def committed(sender: type[Hero], payload: PostSave[Hero]) -> None:
        log.append(f"committed {payload.instance.name}")

    post_save.connect(saved, sender=Hero)
    post_save.connect(committed, sender=Hero, phase=Phase.AFTER_COMMIT)
    try:
        async with Database(f"sqlite+aiosqlite:///{tmp_path / 'heroes.db'}") as db:
            await db.create_all(SQLModel.metadata)
            maker = instrument(
                async_sessionmaker(db.engine, class_=AsyncSession, expire_on_commit=False)
            )
            async with maker() as session:
                hero = Hero(name="Deadpond")
                session.add(hero)
                await session.commit()
                hero.power = "regeneration"
                session.add(hero)
                await session.commit()
                found = (await session.exec(select(Hero))).one()
                assert found.power == "regeneration"
    finally:
        post_save.disconnect(saved, sender=Hero)
        post_save.disconnect(committed, sender=Hero)
    assert log == [
        "saved Deadpond created=True",
        "committed Deadpond",
        "saved Deadpond created=False",
        "committed Deadpond",
    ]
