"""Relays woken at commit (LISTEN/NOTIFY), and short leases kept alive by the heartbeat."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
import sqlalchemy as sa

from aiosignals import Event, Signal
from aiosignals.outbox import OutboxRelay
from aiosignals.repository.sqlalchemy import Database, SQLAlchemyRepository
from tests.outbox import app
from tests.outbox.app import Order
from tests.outbox.test_relay import delivery_log, rows, start_relay, wait_for

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.postgres,
    pytest.mark.parametrize("db_url", ["postgres"], indirect=True),
]


class Ping(Event):
    n: int


ping = Signal(Ping, name="tests.outbox.wakeup.ping")
DELIVERED: list[int] = []
ARRIVED = anyio.Event()


@ping.connect(durable=True, dispatch_uid="tests.outbox.wakeup.record")
async def record(sender: str, payload: Ping) -> None:
    DELIVERED.append(payload.n)
    ARRIVED.set()


@pytest.fixture(autouse=True)
def fresh_records() -> None:
    global ARRIVED  # one event per test, made on the test's own loop
    DELIVERED.clear()
    ARRIVED = anyio.Event()


async def listener_pids(db: Database) -> set[int]:
    """Return the server pids of the connections of *db* that LISTEN for outbox commits."""
    query = sa.text(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND query LIKE 'LISTEN %aiosignals_outbox%'"
    )
    async with db.engine.connect() as connection:
        return set((await connection.scalars(query)).all())


async def wait_for_listener(db: Database, not_pid: int | None = None) -> int:
    with anyio.fail_after(10):
        while True:
            pids = await listener_pids(db) - {not_pid}
            if pids:
                return next(iter(pids))
            await anyio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(relay: OutboxRelay) -> AsyncIterator[None]:
    async with anyio.create_task_group() as group:
        group.start_soon(relay.run)
        yield
        relay.stop()


async def test_a_commit_wakes_a_relay_that_polls_once_a_minute(db: Database) -> None:
    """A relay whose poll_interval is 60 s delivers a committed row at once: the commit woke it."""
    relay = OutboxRelay(db, poll_interval=60.0)
    async with running(relay):
        await wait_for_listener(db)
        async with db.transaction():
            await ping.send("tests", Ping(n=1))
        with anyio.fail_after(10):
            await ARRIVED.wait()
    assert DELIVERED == [1]


async def test_only_a_commit_with_outbox_rows_notifies(db: Database) -> None:
    """
    A rolled-back transaction, or a rolled-back savepoint that held the rows, notifies nothing;
    a commit of two rows notifies once.
    """
    notes: list[str] = []
    marker_seen = anyio.Event()

    def on_note(*args: object) -> None:
        notes.append(str(args[-1]))
        if args[-1] == "marker":
            marker_seen.set()

    async with db.engine.connect() as connection:
        driver = (await connection.get_raw_connection()).driver_connection
        assert driver is not None
        await driver.add_listener("aiosignals_outbox", on_note)
        with contextlib.suppress(LookupError):
            async with db.transaction():
                await ping.send("tests", Ping(n=1))
                raise LookupError
        async with db.transaction():
            with contextlib.suppress(LookupError):
                async with db.transaction():  # a savepoint
                    await ping.send("tests", Ping(n=2))
                    raise LookupError
        async with db.transaction():
            await ping.send("tests", Ping(n=3))
            await ping.send("tests", Ping(n=4))
        # Notifications arrive in commit order: everything sent before is in by the marker.
        async with db.engine.begin() as other:
            await other.execute(sa.text("SELECT pg_notify('aiosignals_outbox', 'marker')"))
        with anyio.fail_after(10):
            await marker_seen.wait()
        await connection.invalidate()
    assert notes == ["", "marker"]
    assert len(await rows(db)) == 2


async def test_a_lost_listening_connection_is_reopened(db: Database) -> None:
    """A relay whose LISTEN connection is cut listens again, and a later commit still wakes it."""
    relay = OutboxRelay(db, poll_interval=60.0)
    async with running(relay):
        first = await wait_for_listener(db)
        async with db.engine.begin() as connection:
            await connection.execute(sa.text(f"SELECT pg_terminate_backend({first})"))
        await wait_for_listener(db, not_pid=first)
        async with db.transaction():
            await ping.send("tests", Ping(n=1))
        with anyio.fail_after(10):
            await ARRIVED.wait()
    assert DELIVERED == [1]


async def test_a_killed_relays_rows_are_delivered_by_another_within_the_lease(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    """
    A relay process whose receiver outlasts the lease keeps its rows (heartbeat); SIGKILLed, its
    rows go to a second relay once the lease runs out, in order, each started again.
    """
    lease = 2.0
    log = tmp_path / "deliveries.log"
    orders = SQLAlchemyRepository(Order, db)
    for item in ("stuck", "later-1", "later-2"):
        await orders.add(Order(item=item))
    relay_process = start_relay(
        db_url, log, "--lease", str(lease), AIOSIGNALS_TEST_BLOCK_ITEM="stuck"
    )
    second = OutboxRelay(db, lease=lease, backoff=0.0, name="second")
    try:
        await anyio.to_thread.run_sync(lambda: wait_for(lambda: delivery_log(log)))
        # Alive and busy past the lease: the heartbeat keeps the rows away from the second.
        held_until = time.monotonic() + 1.5 * lease
        while time.monotonic() < held_until:
            assert await second.run_once() == 0
            await anyio.sleep(0.05)
    finally:
        relay_process.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        relay_process.communicate(timeout=10)
    with anyio.fail_after(20):
        while len(app.DELIVERED) < 3:
            await second.run_once()
            await anyio.sleep(0.05)
    taken_over_after = time.monotonic() - killed_at
    print(f"rows of the killed relay delivered {taken_over_after:.2f} s after SIGKILL")
    # All three were marked as started together, so each counts the dead relay's attempt.
    assert [(attempt, item) for _, attempt, item in app.DELIVERED] == [
        (2, "stuck"),
        (2, "later-1"),
        (2, "later-2"),
    ]
    # Within the lease, give or take a renewal and a poll.
    assert taken_over_after < lease + 2.0


async def test_a_relay_told_not_to_listen_polls(db: Database) -> None:
    """With listen=False the relay opens no LISTEN connection and still delivers, by polling."""
    relay = OutboxRelay(db, poll_interval=0.05, listen=False)
    async with running(relay):
        async with db.transaction():
            await ping.send("tests", Ping(n=1))
        with anyio.fail_after(10):
            await ARRIVED.wait()
        assert await listener_pids(db) == set()
    assert DELIVERED == [1]
