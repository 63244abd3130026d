"""What only the memory backend has: copies, frozen entities, and a run on trio."""

from __future__ import annotations

import dataclasses
from typing import Any

import anyio
import pytest
from pydantic import BaseModel, ConfigDict

from aiosignals import Phase
from aiosignals.models import PostSave, post_save
from aiosignals.repository import MemoryRepository


@dataclasses.dataclass
class Note:
    id: int | None = None
    text: str = ""


class Tag(BaseModel):
    model_config = ConfigDict(frozen=True)
    id: int | None = None
    label: str


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


@pytest.mark.anyio
async def test_transactions_and_phases_work_on_both_backends() -> None:
    """MemoryRepository transactions commit, roll back and run AFTER_COMMIT on asyncio and trio."""
    notes = MemoryRepository(Note)
    committed: list[str] = []

    async def after_commit(sender: Any, payload: PostSave[Any]) -> None:
        committed.append(payload.instance.text)

    post_save.connect(after_commit, sender=Note, phase=Phase.AFTER_COMMIT)
    try:
        async with notes.transaction():
            await notes.add(Note(text="kept"))
        with pytest.raises(ZeroDivisionError):
            async with notes.transaction():
                await notes.add(Note(text="dropped"))
                _ = 1 / 0
    finally:
        post_save.disconnect(after_commit, sender=Note)
    assert committed == ["kept"]
    assert [n.text for n in await notes.list()] == ["kept"]


@pytest.mark.anyio
async def test_stored_entities_are_copies() -> None:
    """Changing an entity returned by add() or get() changes nothing stored until it is saved."""
    notes = MemoryRepository(Note)
    note = await notes.add(Note(text="saved"))
    note.text = "changed, not saved"
    fetched = await notes.get(note.id)
    assert fetched is not None
    assert fetched.text == "saved"
    fetched.text = "also not saved"
    assert [n.text for n in await notes.list()] == ["saved"]


@pytest.mark.anyio
async def test_frozen_pydantic_entities_get_their_key() -> None:
    """add() of a frozen pydantic model returns a copy with the assigned key, which get() finds."""
    tags = MemoryRepository(Tag)
    tag = await tags.add(Tag(label="python"))
    assert tag.id == 1
    assert await tags.get(1) == tag


def test_only_dataclasses_and_pydantic_models_with_the_key_field_are_accepted() -> None:
    """MemoryRepository refuses a class not a dataclass or pydantic model, or with no key field."""
    with pytest.raises(TypeError, match="pydantic models or dataclasses"):
        MemoryRepository(dict)
    with pytest.raises(ValueError, match="no key field 'uuid'"):
        MemoryRepository(Note, key="uuid")


@pytest.mark.anyio
async def test_a_rollback_never_undoes_another_tasks_committed_write() -> None:
    """Rolling back after another task committed the same row keeps the committed value."""
    notes = MemoryRepository(Note)
    note = await notes.add(Note(text="v0"))
    written = anyio.Event()
    committed = anyio.Event()

    async def rolls_back() -> None:
        with pytest.raises(ZeroDivisionError):
            async with notes.transaction():
                await notes.save(Note(id=note.id, text="A, rolled back"))
                written.set()
                await committed.wait()
                _ = 1 / 0

    async def commits() -> None:
        await written.wait()
        async with notes.transaction():
            await notes.save(Note(id=note.id, text="B, committed"))
        committed.set()

    async with anyio.create_task_group() as group:
        group.start_soon(rolls_back)
        group.start_soon(commits)
    stored = await notes.get(note.id)
    assert stored is not None
    assert stored.text == "B, committed"
