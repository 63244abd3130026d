"""One behaviour for every outbox store: in memory, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from aiosignals import Event, Signal
from aiosignals.outbox import MemoryOutboxStore, OutboxStore, Outcomes, SQLAlchemyOutboxStore
from aiosignals.repository.sqlalchemy import Database

pytestmark = pytest.mark.anyio


class Item(Event):
    ordering_key: str


item = Signal(Item, name="tests.outbox.store.item")


@item.connect(durable=True, dispatch_uid="tests.outbox.store.keep")
async def keep(sender: str, payload: Item) -> None:
    raise AssertionError("the store tests call no receiver")


NOW = 2_000_000_000.0

Write = Callable[[str], Awaitable[None]]


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store_and_write(
    request: pytest.FixtureRequest, tmp_path: object
) -> AsyncIterator[tuple[OutboxStore, Write]]:
    """A store, and how to write a row of a key to it (at NOW)."""
    if request.param == "memory":
        memory = MemoryOutboxStore()

        async def write_memory(key: str) -> None:
            payload = Item(ordering_key=key)
            memory.write(item, "tests", payload, dispatch_uid="tests.outbox.store.keep", now=NOW)

        yield memory, write_memory
        return
    url = request.getfixturevalue("db_url")
    async with Database(url) as db:
        store = SQLAlchemyOutboxStore(db)
        await store.create_table()

        async def write_table(key: str) -> None:
            async with db.transaction():
                await item.send("tests", Item(ordering_key=key))

        yield store, write_table


@pytest.fixture
def db_url(request: pytest.FixtureRequest, tmp_path: object) -> str:
    param = request.node.callspec.params["store_and_write"]
    if param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/store.db"
    url: str = request.getfixturevalue("postgres_url")
    return url


def nothing(rows: object) -> list[int]:
    return []


async def test_a_claim_leases_due_rows_in_order_and_skips_keys_held_elsewhere(
    store_and_write: tuple[OutboxStore, Write],
) -> None:
    """A second relay claims no row behind a row of its key that the first relay holds."""
    store, write = store_and_write
    for key in ("a", "b", "a", "c"):
        await write(key)
    first = await store.claim("r1", now=NOW + 1, lease=10, limit=2, skip=(), mark=nothing)
    assert [row.ordering_key for row in first] == ["a", "b"]
    assert {(row.locked_by, row.locked_until) for row in await store.rows(ids=[first[0].id])} == {
        ("r1", NOW + 11)
    }
    second = await store.claim("r2", now=NOW + 1, lease=10, limit=10, skip=(), mark=nothing)
    assert [row.ordering_key for row in second] == ["c"]  # the second "a" waits
    after_lease = await store.claim("r2", now=NOW + 12, lease=10, limit=10, skip=(), mark=nothing)
    assert [row.ordering_key for row in after_lease] == ["a", "b", "a", "c"]


async def test_outcomes_change_only_the_rows_leased_to_the_relay(
    store_and_write: tuple[OutboxStore, Write],
) -> None:
    """finish deletes, fails and marks only this relay's rows, and says when a mark missed."""
    store, write = store_and_write
    for key in ("a", "b", "c"):
        await write(key)
    a, b, c = await store.claim(
        "r1", now=NOW, lease=10, limit=3, skip=(), mark=lambda rows: [rows[0].id]
    )
    assert (await store.rows(ids=[a.id]))[0].attempts == 1
    outcomes = Outcomes(done=[a.id], failed=[(b.id, NOW + 60, "boom")])
    assert await store.finish("r2", outcomes, [c.id]) is False  # not r2's rows
    assert len(await store.rows()) == 3
    assert await store.finish("r1", outcomes, [c.id]) is True
    kept = {row.id: row for row in await store.rows()}
    assert set(kept) == {b.id, c.id}
    assert (kept[b.id].failures, kept[b.id].available_at, kept[b.id].locked_by) == (
        1,
        NOW + 60,
        None,
    )
    assert kept[c.id].attempts == 1
    assert [r.dispatch_uid for r in await store.pending_receivers()] == ["tests.outbox.store.keep"]


async def test_dead_rows_are_requeued_or_purged(store_and_write: tuple[OutboxStore, Write]) -> None:
    """requeue makes dead rows pending with attempts reset; purge deletes them; pending stay."""
    store, write = store_and_write
    for key in ("a", "b", "c"):
        await write(key)
    a, b, _ = await store.claim("r1", now=NOW, lease=10, limit=3, skip=(), mark=nothing)
    await store.finish("r1", Outcomes(dead=[(a.id, "x", True), (b.id, "y", True)]), ())
    assert [row.id for row in await store.rows(status="dead")] == [a.id, b.id]
    assert await store.requeue([a.id], NOW) == 1
    assert await store.purge([]) == 1
    assert [(row.status, row.failures) for row in await store.rows()] == [
        ("pending", 0),
        ("pending", 0),
    ]
