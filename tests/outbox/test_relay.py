"""The durable outbox and its relay, against real SQLite files and a real PostgreSQL."""

from __future__ import annotations

import itertools
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import anyio
import pytest

from aiosignals import Signal
from aiosignals._cli import main as cli
from aiosignals.models import PostSave, post_save
from aiosignals.outbox import OutboxRelay, OutboxRow, SQLAlchemyOutboxStore, current_delivery

# The outbox table's layout is public API (CHANGELOG): a test may write a column as a
# deployment could, to make a row no public call would make.
from aiosignals.outbox._table import outbox
from aiosignals.repository.sqlalchemy import Database, SQLAlchemyRepository
from tests.outbox import app
from tests.outbox.app import Job, Order, job_done
from tests.outbox.clock import Clock

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).parent.parent.parent
MAX_GROUP_ROWS = 256
"""The most rows a relay records at once, so redoes after a kill (docs/outbox.md, CHANGELOG)."""


async def rows(db: Database) -> list[OutboxRow]:
    return await SQLAlchemyOutboxStore(db).rows()


def relay_for(db: Database, **options: float) -> OutboxRelay:
    return OutboxRelay(db, backoff=0.0, **options)  # type: ignore[arg-type]


async def test_the_row_is_written_in_the_entity_transaction_and_not_on_rollback(
    db: Database,
) -> None:
    """The outbox row commits or rolls back with the entity; the sender runs no durable receiver."""
    orders = SQLAlchemyRepository(Order, db)
    with pytest.raises(LookupError):
        async with db.transaction():
            await orders.add(Order(item="dropped"))
            raise LookupError
    assert await rows(db) == []

    async with db.transaction():
        await orders.add(Order(item="kept"))
    stored = await rows(db)
    assert [(r.dispatch_uid, r.status, r.attempts) for r in stored] == [
        ("tests.outbox.record_order", "pending", 0)
    ]
    # Durable receivers never run in the sending process: only the relay calls them.
    assert app.DELIVERED == []


async def test_the_relay_delivers_after_commit_with_the_entity_rebuilt(db: Database) -> None:
    """
    run_once() delivers nothing of a transaction still open; after its commit it delivers each
    row once, in order, with the entity rebuilt from the row (key and fields), then deletes it.
    """
    orders = SQLAlchemyRepository(Order, db)
    rebuilt: list[Order] = []

    async def keep(sender: type[Order], payload: PostSave[Order]) -> None:
        rebuilt.append(payload.instance)

    post_save.connect(keep, sender=Order, durable=True, dispatch_uid="tests.outbox.keep")
    try:
        saved: list[Order] = []
        written, relay_ran = anyio.Event(), anyio.Event()

        async def write() -> None:
            async with db.transaction():
                saved.append(await orders.add(Order(item="a")))
                saved.append(await orders.add(Order(item="b")))
                written.set()
                await relay_ran.wait()

        async with anyio.create_task_group() as group:
            group.start_soon(write)
            await written.wait()
            # SQLite has one writer: a relay there waits for the commit, so only PostgreSQL
            # can show the rows of an open transaction being passed over.
            if not db.is_sqlite:
                assert await relay_for(db).run_once() == 0
            relay_ran.set()
        assert app.DELIVERED == []
        assert rebuilt == []

        assert await relay_for(db).run_once() == 4
    finally:
        post_save.disconnect(sender=Order, dispatch_uid="tests.outbox.keep")
    ids = [r[0] for r in app.DELIVERED]
    assert [(attempt, item) for _, attempt, item in app.DELIVERED] == [(1, "a"), (1, "b")]
    assert ids == sorted(ids)
    assert [(type(o), o.id, o.item) for o in rebuilt] == [(Order, o.id, o.item) for o in saved]
    assert all(o is not s for o, s in zip(rebuilt, saved, strict=True))
    assert await rows(db) == []
    assert await relay_for(db).run_once() == 0


async def test_a_receiver_that_fails_twice_is_delivered_on_the_third_attempt(
    db: Database,
) -> None:
    """A row whose receiver fails twice is retried and delivered on attempt 3, then removed."""
    app.FLAKY["flaky"] = 2
    await SQLAlchemyRepository(Order, db).add(Order(item="flaky"))
    relay = relay_for(db)
    for _ in range(3):
        await relay.run_once()
    assert [(attempt, item) for _, attempt, item in app.DELIVERED] == [(3, "flaky")]
    assert await rows(db) == []


async def test_retries_wait_an_exponential_backoff(db: Database) -> None:
    """A failed row is due again after the first backoff, jittered, and not before."""
    app.FLAKY["flaky"] = 5
    await SQLAlchemyRepository(Order, db).add(Order(item="flaky"))
    clock = Clock()
    relay = OutboxRelay(db, backoff=60.0, clock=clock)
    await relay.run_once()
    (row,) = await rows(db)
    # Jittered between half and all of the first delay.
    assert clock() + 30 <= row.available_at <= clock() + 60
    assert "flaky flaky" in str(row.last_error)
    clock.advance(29.9)
    assert await relay.run_once() == 0  # not due yet
    clock.advance(30.1)
    assert await relay.run_once() == 1


async def test_a_receiver_that_always_fails_is_dead_listed_and_retried_by_the_cli(
    db: Database, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A row failing max_attempts times is dead, listed by `outbox list`, requeued by `retry`."""
    await SQLAlchemyRepository(Order, db).add(Order(item="poison"))
    relay = relay_for(db, max_attempts=3)
    for _ in range(4):
        await relay.run_once()
    (row,) = await rows(db)
    assert (row.status, row.attempts) == ("dead", 3)
    assert "RuntimeError: cannot handle poison" in str(row.last_error)

    assert await anyio.to_thread.run_sync(cli, ["outbox", "list", "--db", db_url]) == 0
    listing = capsys.readouterr().out
    assert "dead" in listing
    assert "tests.outbox.record_order" in listing
    assert "cannot handle poison" in listing
    assert "0 pending, 1 dead" in listing

    app.BROKEN.clear()  # the bug is fixed and deployed
    assert await anyio.to_thread.run_sync(cli, ["outbox", "retry", "--db", db_url]) == 0
    assert "requeued 1 dead row(s)" in capsys.readouterr().out
    assert await relay.run_once() == 1
    assert [item for _, _, item in app.DELIVERED] == ["poison"]


async def test_purge_deletes_dead_rows_only(
    db: Database, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`aiosignals outbox purge` deletes the dead rows and keeps the pending ones."""
    orders = SQLAlchemyRepository(Order, db)
    await orders.add(Order(item="poison"))
    await relay_for(db, max_attempts=1).run_once()
    await orders.add(Order(item="fine"))
    assert await anyio.to_thread.run_sync(cli, ["outbox", "purge", "--db", db_url]) == 0
    assert "purged 1 dead row(s)" in capsys.readouterr().out
    assert [r.status for r in await rows(db)] == ["pending"]


async def test_a_payload_that_no_longer_validates_goes_dead_at_once(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """A stored payload that no longer validates goes dead on its first attempt, saying why."""
    async with db.transaction():
        await job_done.send("tests", Job(n=1))
    async with db.engine.begin() as connection:
        # Raw, as an old deployment's row would be: the payload column is the table's contract.
        await connection.execute(outbox.update().values(payload='{"n": "not a number"}'))
    await relay_for(db).run_once()
    stored = await rows(db)
    assert {r.status for r in stored} == {"dead"}
    assert all(r.attempts == 1 for r in stored)
    assert all("does not validate" in str(r.last_error) for r in stored)
    # Logs travel further than the table: the error names the field, not its value.
    assert "n: Input should be a valid integer" in caplog.text
    assert "not a number" not in caplog.text


async def test_a_row_whose_receiver_is_not_connected_waits_with_one_warning(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """
    A row for a dispatch_uid no receiver of this process has stays pending and untried, warned about
    once (uid and module), and holds up no other receiver.
    """
    ghost = Signal(Job, name="tests.outbox.ghost")

    async def gone(sender: str, payload: Job) -> None:
        raise AssertionError("never called")

    ghost.connect(gone, durable=True, dispatch_uid="tests.outbox.gone")
    async with db.transaction():
        await ghost.send("tests", Job(n=1))
        await job_done.send("tests", Job(n=2))
    ghost.disconnect(dispatch_uid="tests.outbox.gone")

    relay = relay_for(db)
    with caplog.at_level(logging.WARNING, logger="aiosignals.outbox"):
        assert await relay.run_once() == 4
        assert await relay.run_once() == 0
        assert await relay.run_once() == 0
    assert len(app.JOBS) == 4
    (row,) = await rows(db)
    assert (row.status, row.attempts, row.locked_by) == ("pending", 0, None)
    warnings = [r.getMessage() for r in caplog.records if "'tests.outbox.gone'" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "--app tests.outbox.test_relay" in warnings[0]

    ghost.connect(gone, durable=True, dispatch_uid="tests.outbox.gone")  # deployed
    await relay.run_once()
    (row,) = await rows(db)
    assert (row.attempts, row.failures) == (1, 1)
    assert "never called" in str(row.last_error)


async def test_a_failing_row_holds_back_only_the_later_rows_of_its_entity(db: Database) -> None:
    """A failing row holds back its entity's later rows, not other entities' or receivers'."""
    app.FLAKY["first"] = 1
    orders = SQLAlchemyRepository(Order, db)
    order = await orders.add(Order(item="first"))
    await orders.add(Order(item="other"))
    order.item = "second"
    await orders.save(order)
    async with db.transaction():
        await job_done.send("tests", Job(n=1))  # other receivers are not held back

    relay = relay_for(db)
    await relay.run_once()
    assert [item for _, _, item in app.DELIVERED] == ["other"]
    assert len(app.JOBS) == 4
    await relay.run_once()
    assert [item for _, _, item in app.DELIVERED] == ["other", "first", "second"]


def test_durable_receivers_need_a_dispatch_uid() -> None:
    """connect(durable=True) without a dispatch_uid raises ValueError."""

    async def receiver(sender: str, payload: Job) -> None:
        pass

    with pytest.raises(ValueError, match="dispatch_uid"):
        job_done.connect(receiver, durable=True)


async def test_a_durable_receiver_needs_a_storable_sender(db: Database) -> None:
    """A send with a sender that cannot be stored raises TypeError and writes no outbox row."""
    with pytest.raises(TypeError, match="sender must be a class, a function, a string or None"):
        async with db.transaction():
            await job_done.send(object(), Job(n=1))
    assert await rows(db) == []


def start_relay(db_url: str, log: Path, *options: str, **env: str) -> subprocess.Popen[str]:
    """Start `aiosignals relay` on the test app, logging its deliveries to *log*."""
    return subprocess.Popen(
        [sys.executable, "-m", "aiosignals", "relay", "--db", db_url,
         "--app", "tests.outbox.app", "--poll-interval", "0.05", *options],
        cwd=ROOT,
        env={**os.environ, "AIOSIGNALS_TEST_DELIVERY_LOG": str(log), **env},
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def delivery_log(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def wait_for(predicate: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.05)


async def test_a_killed_writer_loses_no_committed_event_and_leaks_no_rolled_back_one(
    db: Database, db_url: str
) -> None:
    """After a writer is SIGKILLed, each committed event is delivered once, no rolled-back one."""
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.outbox.writer", db_url, "20", "5"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None
    line = await anyio.to_thread.run_sync(writer.stdout.readline)
    assert line.strip() == "committed"
    writer.send_signal(signal.SIGKILL)
    writer.wait(10)
    writer.stdout.close()

    relay = relay_for(db)
    while await relay.run_once():
        pass
    delivered = [item for _, _, item in app.DELIVERED]
    assert sorted(delivered) == sorted(f"kept-{i}" for i in range(20))
    assert Counter(delivered).most_common(1)[0][1] == 1


async def test_a_relay_killed_mid_delivery_is_redelivered_after_the_lease(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    """A row in the hands of a SIGKILLed relay is delivered again once its lease has run out."""
    log = tmp_path / "deliveries.log"
    await SQLAlchemyRepository(Order, db).add(Order(item="stuck"))
    relay_process = start_relay(db_url, log, "--lease", "1", AIOSIGNALS_TEST_BLOCK_ITEM="stuck")
    try:
        await anyio.to_thread.run_sync(lambda: wait_for(lambda: delivery_log(log)))
        assert delivery_log(log)[0][:3] == ["started", delivery_log(log)[0][1], "1"]
    finally:
        relay_process.send_signal(signal.SIGKILL)
        relay_process.communicate(timeout=10)  # reaps it and closes its pipe

    clock = Clock()
    relay = OutboxRelay(db, backoff=0.0, clock=clock)
    assert await relay.run_once() == 0  # still leased by the dead relay
    clock.advance(1.1)
    assert await relay.run_once() == 1
    assert [(attempt, item) for _, attempt, item in app.DELIVERED] == [(2, "stuck")]


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
async def test_the_relay_command_stops_cleanly_on_sigterm_and_sigint(
    db: Database, db_url: str, tmp_path: Path, stop_signal: signal.Signals
) -> None:
    """`aiosignals relay` exits 0 on SIGTERM or SIGINT, having delivered and removed its row."""
    log = tmp_path / "deliveries.log"
    await SQLAlchemyRepository(Order, db).add(Order(item="one"))
    relay_process = start_relay(db_url, log)
    try:
        await anyio.to_thread.run_sync(lambda: wait_for(lambda: delivery_log(log)))
        relay_process.send_signal(stop_signal)
        _, stderr = await anyio.to_thread.run_sync(lambda: relay_process.communicate(timeout=20))
    finally:
        if relay_process.poll() is None:
            relay_process.kill()
    assert relay_process.returncode == 0, stderr
    assert "relay stopped" in stderr
    assert [entry[3] for entry in delivery_log(log)] == ["one"]
    assert await rows(db) == []


def test_the_relay_command_reports_an_app_that_does_not_import(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`aiosignals relay --app` with a module that does not import exits 2 and names it."""
    assert cli(["relay", "--db", "sqlite+aiosqlite://", "--app", "no.such.module"]) == 2
    assert "cannot import --app 'no.such.module'" in capsys.readouterr().err


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_two_relays_share_1000_rows_without_delivering_one_twice(db: Database) -> None:
    """Two relays on one PostgreSQL outbox deliver each of 1,000 rows exactly once."""
    async with db.transaction():
        for n in range(250):
            await job_done.send("tests", Job(n=n))
    assert len(await rows(db)) == 1000

    relays = [OutboxRelay(db, batch_size=50, poll_interval=0.01, name=f"r{i}") for i in (1, 2)]

    async def run_until_empty(relay: OutboxRelay) -> None:
        idle = 0
        while idle < 3:
            idle = idle + 1 if await relay.run_once() == 0 else 0
            await anyio.sleep(0.01)

    async with anyio.create_task_group() as group:
        for relay in relays:
            group.start_soon(run_until_empty, relay)

    delivered = Counter(delivery_id for delivery_id, _ in app.JOBS)
    assert len(delivered) == 1000
    assert set(delivered.values()) == {1}
    assert app.OVERLAPS == []
    assert await rows(db) == []
    assert current_delivery() is None


async def test_a_stop_before_run_is_not_lost_and_the_relay_can_run_again(db: Database) -> None:
    """stop() before run() makes run() return at once, and the relay can run and deliver later."""
    relay = relay_for(db)
    relay.stop()
    with anyio.fail_after(5):
        await relay.run()  # returns at once
    await SQLAlchemyRepository(Order, db).add(Order(item="later"))
    async with anyio.create_task_group() as group:
        group.start_soon(relay.run)
        with anyio.fail_after(10):
            while not app.DELIVERED:
                await anyio.sleep(0.01)
        relay.stop()
    assert [item for _, _, item in app.DELIVERED] == ["later"]


async def test_a_row_backing_off_holds_back_its_receivers_later_rows_across_runs(
    db: Database,
) -> None:
    """A row waiting out its backoff holds back the later rows of its entity until it is due."""
    app.FLAKY["first"] = 1
    orders = SQLAlchemyRepository(Order, db)
    order = await orders.add(Order(item="first"))
    order.item = "second"
    await orders.save(order)
    clock = Clock()
    relay = OutboxRelay(db, backoff=60.0, clock=clock)
    await relay.run_once()  # "first" fails and backs off for 30 to 60 s
    assert await relay.run_once() == 0  # "second" waits behind it, though due
    assert app.DELIVERED == []
    clock.advance(60)
    await relay.run_once()
    assert [item for _, _, item in app.DELIVERED] == ["first", "second"]


async def test_a_batch_longer_than_the_lease_keeps_its_rows(db: Database) -> None:
    """A relay renews its lease while a batch outlasts it: a second relay never takes its rows."""
    lease = 2.0
    started, release = anyio.Event(), anyio.Event()
    app.GATES["slow"] = (started, release)
    orders = SQLAlchemyRepository(Order, db)
    await orders.add(Order(item="slow"))
    await orders.add(Order(item="after"))
    first = OutboxRelay(db, lease=lease, backoff=0.0, name="first")
    second = OutboxRelay(db, lease=lease, backoff=0.0, name="second")
    claimed_by_second: list[int] = []

    async def poll_with_the_second() -> None:
        # "slow" is held until the second relay has polled three times after the first's
        # lease would have run out one and a half times over, had it not been renewed (the
        # renewal, every third of a lease, has a lease of slack on a loaded machine). The
        # poll count, not a sleep, decides when "slow" ends: a slow machine only waits longer.
        await started.wait()
        since = anyio.current_time()
        late_polls = 0
        while late_polls < 3:
            began = anyio.current_time()
            claimed_by_second.append(await second.run_once())
            late_polls += began - since > 1.5 * lease
            await anyio.sleep(0.1)  # pacing only
        release.set()

    # Had the second relay taken "slow", its run_once would wait on the gate it opens.
    with anyio.fail_after(60):
        async with anyio.create_task_group() as group:
            group.start_soon(first.run_once)
            group.start_soon(poll_with_the_second)
    assert sorted(item for _, _, item in app.DELIVERED) == ["after", "slow"]
    assert sum(claimed_by_second) == 0
    assert await rows(db) == []


@pytest.mark.parametrize("concurrency", [1, 16])
async def test_a_cancelled_batch_gives_back_the_rows_it_did_not_finish(
    db: Database, concurrency: int
) -> None:
    """
    A relay cancelled mid-batch records what it delivered and gives back the rest at once,
    their attempts not counted.
    """
    orders = SQLAlchemyRepository(Order, db)
    for item in ("slow", "b", "c"):
        await orders.add(Order(item=item))
    with anyio.move_on_after(0.3):
        await relay_for(db, concurrency=concurrency).run_once()
    # One at a time, "b" and "c" wait behind "slow"; side by side, they were delivered.
    left = 3 if concurrency == 1 else 1
    stored = await rows(db)
    assert [(r.status, r.attempts, r.locked_until) for r in stored] == [("pending", 0, None)] * left
    await relay_for(db).run_once()
    assert sorted((attempt, item) for _, attempt, item in app.DELIVERED) == [
        (1, "b"),
        (1, "c"),
        (1, "slow"),
    ]


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_the_relay_outlives_lost_database_connections(
    db: Database, postgres_server_url: str
) -> None:
    """A running relay keeps delivering after every PostgreSQL connection of its pool is cut."""
    relay = OutboxRelay(db, poll_interval=0.05, backoff=0.0)
    orders = SQLAlchemyRepository(Order, db)
    async with anyio.create_task_group() as group:
        group.start_soon(relay.run)
        await orders.add(Order(item="before"))
        with anyio.fail_after(10):
            while len(app.DELIVERED) < 1:
                await anyio.sleep(0.02)
        # Every connection of the relay's pool is cut, as by a database restart.
        terminate = (
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            f" WHERE datname = '{db.url.database}'"
        )
        await anyio.to_thread.run_sync(
            lambda: subprocess.run(
                ["psql", postgres_server_url, "-qc", terminate], check=True, capture_output=True
            )
        )
        # (The writer's own pooled connections were cut too: it writes through a new pool.)
        async with Database(str(db.url.render_as_string(hide_password=False))) as writer:
            await SQLAlchemyRepository(Order, writer).add(Order(item="after"))
        with anyio.fail_after(20):
            while len(app.DELIVERED) < 2:
                await anyio.sleep(0.05)
        relay.stop()
    assert [item for _, _, item in app.DELIVERED] == ["before", "after"]


async def test_the_relay_command_finishes_the_row_in_hand_on_sigterm(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    """On SIGTERM `aiosignals relay` finishes the row in hand and gives back the next one."""
    log = tmp_path / "deliveries.log"
    orders = SQLAlchemyRepository(Order, db)
    await orders.add(Order(item="slow"))
    await orders.add(Order(item="next"))
    relay_process = start_relay(db_url, log, "--concurrency", "1")
    try:
        await anyio.to_thread.run_sync(lambda: wait_for(lambda: delivery_log(log)))
        assert delivery_log(log)[0][0] == "started"  # "slow" is in hand (1 s)
        relay_process.send_signal(signal.SIGTERM)
        _, stderr = await anyio.to_thread.run_sync(lambda: relay_process.communicate(timeout=20))
    finally:
        if relay_process.poll() is None:
            relay_process.kill()
    assert relay_process.returncode == 0, stderr
    assert [entry[:1] + entry[3:4] for entry in delivery_log(log)] == [
        ["started", "slow"],
        ["delivered", "slow"],
    ]
    # "next" was not started: it stays for the next relay, its attempt given back.
    assert [(r.status, r.attempts) for r in await rows(db)] == [("pending", 0)]


def start_bare_relay(db_url: str, err: Path, *options: str) -> subprocess.Popen[str]:
    """Start `aiosignals relay` with only *options*, its stderr to the file *err*."""
    with err.open("w") as stderr_file:  # the child keeps its own copy
        return subprocess.Popen(
            [sys.executable, "-m", "aiosignals", "relay", "--db", db_url,
             "--poll-interval", "0.05", *options],
            cwd=ROOT,
            stderr=stderr_file,
            text=True,
        )  # fmt: skip


def wait_for_more(log: Path) -> None:
    """Wait until *log* has more lines than now."""
    count = len(delivery_log(log))
    wait_for(lambda: len(delivery_log(log)) > count)


def relay_log(relay_process: subprocess.Popen[str]) -> str:
    """Stop the relay process if it still runs, and return what it logged."""
    if relay_process.poll() is None:
        relay_process.send_signal(signal.SIGTERM)
    try:
        _, stderr = relay_process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        relay_process.kill()
        _, stderr = relay_process.communicate()
    return stderr


async def test_a_row_whose_receiver_kills_the_relay_is_dead_after_max_attempts_deaths(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    """
    A receiver that SIGKILLs its relay is parked dead after max_attempts deaths; the other rows are
    delivered, each once.
    """
    log = tmp_path / "deliveries.log"
    orders = SQLAlchemyRepository(Order, db)
    for item in ("before-1", "before-2", "kill", "after-1"):
        await orders.add(Order(item=item))
    options = ("--lease", "0.5", "--max-attempts", "2")

    def after_delivered() -> bool:
        return ["delivered", "after-1"] in [e[:1] + e[3:4] for e in delivery_log(log)]

    deaths = 0
    while True:
        relay_process = start_relay(db_url, log, *options, AIOSIGNALS_TEST_KILL_ITEM="kill")
        try:
            await anyio.to_thread.run_sync(
                wait_for, lambda p=relay_process: p.poll() is not None or after_delivered()
            )
        finally:
            stderr = relay_log(relay_process)
        if relay_process.returncode != -signal.SIGKILL:
            break
        deaths += 1
        assert deaths <= 2, "the row kept killing relays past max_attempts"
    assert relay_process.returncode == 0, stderr
    assert deaths == 2
    entries = delivery_log(log)
    assert [e[2] for e in entries if e[0] == "killing"] == ["1", "2"]
    delivered = Counter(e[3] for e in entries if e[0] == "delivered")
    assert set(delivered) == {"before-1", "before-2", "after-1"}
    # The rows done before the first death may be redone once (their outcome was not yet
    # written), never on every restart.
    assert max(delivered.values()) <= 2
    (row,) = await rows(db)
    assert (row.status, row.attempts, row.failures) == ("dead", 2, 0)
    assert "relay died while delivering; 2 times" in str(row.last_error)


async def test_a_killed_relay_does_not_use_up_the_rows_failure_attempts(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    """
    A relay killed with a row in hand counts no failure: max_attempts real failures still get their
    retries, and rows merely claimed count nothing.
    """
    log = tmp_path / "deliveries.log"
    orders = SQLAlchemyRepository(Order, db)
    await orders.add(Order(item="stuck"))
    await orders.add(Order(item="later"))
    # One row at a time: "later" waits behind "stuck" (claimed, never started).
    relay_process = start_relay(
        db_url, log, "--lease", "0.5", "--concurrency", "1", AIOSIGNALS_TEST_BLOCK_ITEM="stuck"
    )
    try:
        await anyio.to_thread.run_sync(wait_for_more, log)
    finally:
        relay_process.send_signal(signal.SIGKILL)
        relay_process.communicate(timeout=10)
    app.FLAKY["stuck"] = 1  # the first real failure
    # Past the dead relay's lease at once.
    relay = OutboxRelay(db, backoff=0.0, max_attempts=2, clock=lambda: time.time() + 1)
    with anyio.fail_after(10):
        while len(app.DELIVERED) < 2:
            await relay.run_once()
    attempts = {item: attempt for _, attempt, item in app.DELIVERED}
    # Start 1 died with its relay, 2 failed, 3 was delivered.
    assert attempts["stuck"] == 3
    # "later" was claimed but never started: at most counted once, as a row of the group
    # the first relay had in hand when it died.
    assert attempts["later"] in {1, 2}


async def test_a_receiver_raising_cancelled_error_fails_its_row_and_the_relay_runs_on(
    db: Database,
) -> None:
    """
    A CancelledError raised by a receiver (the relay not being cancelled) is retried and parked like
    any failure, and the relay keeps delivering.
    """
    orders = SQLAlchemyRepository(Order, db)
    await orders.add(Order(item="cancelled"))
    relay = OutboxRelay(db, max_attempts=2, backoff=0.0, poll_interval=0.01)
    async with anyio.create_task_group() as group:
        group.start_soon(relay.run)
        with anyio.fail_after(10):
            while [r.status for r in await rows(db)] != ["dead"]:
                await anyio.sleep(0.02)
        async with db.transaction():
            await job_done.send("tests", Job(n=1))
        with anyio.fail_after(10):
            while len(app.JOBS) < 4:
                await anyio.sleep(0.02)
        relay.stop()
    (row,) = await rows(db)
    assert (row.attempts, row.failures) == (2, 2)
    assert "CancelledError" in str(row.last_error)


async def test_a_receiver_past_the_delivery_timeout_fails_and_is_retried(db: Database) -> None:
    """
    A receiver running past delivery_timeout fails with TimeoutError, is retried, and does not hold
    up other receivers for longer.
    """
    app.SLOW["slow"] = 30.0
    orders = SQLAlchemyRepository(Order, db)
    await orders.add(Order(item="slow"))
    async with db.transaction():
        await job_done.send("tests", Job(n=1))
    relay = OutboxRelay(db, delivery_timeout=0.2, backoff=0.0, max_attempts=2)
    with anyio.fail_after(5):
        assert await relay.run_once() == 5
    assert len(app.JOBS) == 4
    (row,) = await rows(db)
    assert (row.status, row.attempts, row.failures) == ("pending", 1, 1)
    assert "TimeoutError" in str(row.last_error)
    assert "delivery_timeout" in str(row.last_error)
    with anyio.fail_after(5):
        await relay.run_once()
    (row,) = await rows(db)
    assert row.status == "dead"
    assert app.DELIVERED == []


async def test_a_receiver_deaf_to_its_delivery_timeout_loses_its_lease(db: Database) -> None:
    """
    A receiver that ignores the cancellation at delivery_timeout no longer has its lease
    renewed: another relay takes the row and delivers it meanwhile.
    """
    app.STUBBORN["deaf"] = 1
    await SQLAlchemyRepository(Order, db).add(Order(item="deaf"))
    stuck = OutboxRelay(db, lease=0.3, delivery_timeout=0.1, backoff=0.0, name="stuck")
    other = OutboxRelay(db, lease=0.3, backoff=0.0, name="other")
    async with anyio.create_task_group() as group:
        group.start_soon(stuck.run_once)
        with anyio.fail_after(5):
            while [r.locked_by for r in await rows(db)] != ["stuck"]:
                await anyio.sleep(0.01)
        with anyio.fail_after(app.STUBBORN_SECONDS - 0.5):
            while not app.DELIVERED:
                await other.run_once()
                await anyio.sleep(0.05)
    # The second relay delivered it while the first was still stuck in the receiver.
    assert next((attempt, item) for _, attempt, item in app.DELIVERED) == (2, "deaf")
    assert await rows(db) == []


@pytest.mark.parametrize("bad", ["0", "-1", "nan", "inf", "soon"])
def test_the_relay_command_refuses_a_bad_delivery_timeout(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """
    --delivery-timeout must be a positive finite number of seconds: anything else is a usage error.
    """
    with pytest.raises(SystemExit) as exit_info:
        cli(["relay", "--db", "sqlite+aiosqlite://", f"--delivery-timeout={bad}"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "argument --delivery-timeout:" in error
    assert "seconds" in error


def test_a_delivery_timeout_must_be_positive_and_finite() -> None:
    """OutboxRelay refuses a delivery_timeout that is not a positive finite number."""
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="delivery_timeout"):
            OutboxRelay(Database("sqlite+aiosqlite://"), delivery_timeout=bad)


@pytest.mark.parametrize(
    ("option", "bad", "error"),
    [
        ("poll_interval", -1.0, ValueError),  # accepted: run() polled ~500 times a second
        ("poll_interval", 0, ValueError),  # likewise a busy loop
        ("poll_interval", float("nan"), ValueError),  # accepted: run() raised later
        ("poll_interval", float("inf"), ValueError),  # accepted: an idle relay never polled again
        ("poll_interval", "1", TypeError),
        ("backoff", -1.0, ValueError),  # accepted: retries due before they failed
        ("backoff", float("nan"), ValueError),  # accepted: every retry waited max_backoff
        ("max_backoff", float("nan"), ValueError),
        ("max_backoff", -1.0, ValueError),
        ("backoff", "1", TypeError),
        ("batch_size", float("nan"), TypeError),  # accepted: NaN < 1 is false
        ("batch_size", float("inf"), TypeError),
        ("batch_size", True, TypeError),
        ("max_attempts", float("nan"), TypeError),
        ("max_attempts", True, TypeError),
        ("lease", True, TypeError),
        ("delivery_timeout", True, TypeError),
        ("clock", None, TypeError),  # accepted: run() raised "'NoneType' is not callable"
        ("clock", 3.0, TypeError),
        ("listen", "no", TypeError),  # accepted: a truthy string listened
        ("listen", None, TypeError),
    ],
)
def test_every_option_is_checked_at_construction(
    option: str, bad: object, error: type[Exception]
) -> None:
    """OutboxRelay refuses a bad option when it is built, not when run() meets it."""
    with pytest.raises(error, match=option):
        OutboxRelay(Database("sqlite+aiosqlite://"), **{option: bad})  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]


async def test_each_batch_is_logged_at_info_with_its_counts(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """The relay logs one INFO line per batch: rows, receivers, outcomes and time."""
    orders = SQLAlchemyRepository(Order, db)
    await orders.add(Order(item="a"))
    await orders.add(Order(item="poison"))
    async with db.transaction():
        await job_done.send("tests", Job(n=1))
    with caplog.at_level(logging.INFO, logger="aiosignals.outbox"):
        await relay_for(db, max_attempts=2).run_once()
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert "6 rows for 5 receivers" in line
    assert "5 delivered, 1 retrying, 0 dead" in line
    assert re.search(r"in \d+\.\d+ s", line)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_relays_sigkilled_again_and_again_always_move_forward(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    """
    Relays SIGKILLed 200 ms after they start deliver more each time, lose nothing, and redo only a
    handful of rows per kill.
    """
    log = tmp_path / "deliveries.log"
    async with db.transaction():
        for n in range(250):
            await job_done.send("tests", Job(n=n))  # 4 receivers: 1,000 rows
    left = [len(await rows(db))]
    kills = 4
    for _ in range(kills):
        relay_process = start_relay(db_url, log, "--lease", "0.3")
        try:
            # Killed 200 ms after it is up and delivering.
            await anyio.to_thread.run_sync(wait_for_more, log)
            await anyio.sleep(0.2)
        finally:
            relay_process.send_signal(signal.SIGKILL)
            relay_process.communicate(timeout=10)
        left.append(len(await rows(db)))
        if left[-1] == 0:
            break
    assert all(after < before for before, after in itertools.pairwise(left)), left
    relay = relay_for(db)
    with anyio.fail_after(20):
        while await rows(db):
            await relay.run_once()
            await anyio.sleep(0.05)
    deliveries = Counter((e[1], e[3]) for e in delivery_log(log) if e[0] == "job")
    deliveries.update((str(delivery_id), uid) for delivery_id, uid in app.JOBS)
    assert len(deliveries) == 1000
    duplicates = sum(deliveries.values()) - 1000
    print(f"rows left after each kill: {left}; duplicates: {duplicates}")
    assert duplicates <= MAX_GROUP_ROWS * kills


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_relay_without_receivers_warns_at_start_and_leaves_the_rows_pending(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    """
    A relay started without --app, or with modules that connect no durable receiver, says so at
    start, names each waiting uid and its module, and parks nothing.
    """
    await SQLAlchemyRepository(Order, db).add(Order(item="waiting"))
    cases = {"no-app": [], "json": ["--app", "json"]}
    logs = {name: tmp_path / f"{name}.err" for name in cases}
    processes = {name: start_bare_relay(db_url, logs[name], *apps) for name, apps in cases.items()}
    try:
        for log in logs.values():
            await anyio.to_thread.run_sync(
                wait_for, lambda path=log: "'tests.outbox.record_order'" in path.read_text()
            )
    finally:
        for relay_process in processes.values():
            relay_log(relay_process)
    for name, relay_process in processes.items():
        stderr = logs[name].read_text()
        assert relay_process.returncode == 0, stderr
        assert "--app tests.outbox.app" in stderr
    assert "no --app given" in logs["no-app"].read_text()
    assert "--app json connects no durable receiver" in logs["json"].read_text()
    (row,) = await rows(db)
    assert (row.status, row.attempts) == ("pending", 0)
