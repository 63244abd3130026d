"""Order per key across two relay processes sharing one PostgreSQL outbox."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest

from aiosignals.outbox import OutboxRelay
from aiosignals.repository.sqlalchemy import Database, SQLAlchemyRepository
from tests.outbox.app import STEPS, Order, Step, step
from tests.outbox.test_relay import ROOT, delivery_log, rows, wait_for

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.postgres,
    pytest.mark.parametrize("db_url", ["postgres"], indirect=True),
]

KEYS = [f"k{n}" for n in range(30)]
ROUNDS = 3
BY_KEY = "tests.outbox.step.by_key"
STRICT = "tests.outbox.step.strict"


@contextmanager
def two_relays(db_url: str, tmp_path: Path, **env: str) -> Iterator[Path]:
    """Run two `aiosignals relay` processes on the test app; yield their delivery log."""
    log = tmp_path / "deliveries.log"
    errs = [tmp_path / f"relay-{n}.err" for n in (1, 2)]
    environment = {**os.environ, "AIOSIGNALS_TEST_DELIVERY_LOG": str(log), **env}
    processes: list[subprocess.Popen[str]] = []
    try:
        for err in errs:
            with err.open("w") as stderr:  # the child keeps its own copy
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "aiosignals", "relay", "--db", db_url,
                         "--app", "tests.outbox.app", "--poll-interval", "0.02",
                         "--batch-size", "20", "--backoff", "0.05"],
                        cwd=ROOT,
                        env=environment,
                        stderr=stderr,
                        text=True,
                    )
                )  # fmt: skip
        # Both relays are up before any row is written: both take a share.
        wait_for(lambda: all("delivering from" in err.read_text() for err in errs))
        yield log
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process, err in zip(processes, errs, strict=True):
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            assert process.returncode == 0, err.read_text()


async def send_steps(db: Database) -> None:
    """Send ROUNDS steps of each key, round-robin: seq counts the sends, commit order."""
    seq = 0
    for _ in range(ROUNDS):
        async with db.transaction():
            for key in KEYS:
                await step.send("tests", Step(ordering_key=key, seq=seq))
                seq += 1


def deliveries(log: Path, uid: str, what: str = "step") -> list[tuple[str, int, str]]:
    """Return (key, seq, pid) of each *what* line of *uid* in the log, in log order."""
    return [
        (key, int(seq), pid)
        for entry, receiver, key, seq, pid in (e for e in delivery_log(log) if len(e) == 5)
        if entry == what and receiver == uid
    ]


def per_key(found: list[tuple[str, int, str]]) -> dict[str, list[int]]:
    keyed: dict[str, list[int]] = defaultdict(list)
    for key, seq, _ in found:
        keyed[key].append(seq)
    return keyed


def sent(key: str) -> list[int]:
    """The seqs sent for *key*, in commit order."""
    return [KEYS.index(key) + n * len(KEYS) for n in range(ROUNDS)]


async def test_two_relays_keep_each_keys_order_and_share_the_keys(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    """
    Two relay processes deliver every row once, each key's rows in commit order, both taking a
    share; the ordering="receiver" receiver's rows keep one order over all keys.
    """
    total = len(KEYS) * ROUNDS
    with two_relays(db_url, tmp_path, AIOSIGNALS_TEST_STEP_SECONDS="0.002") as log:
        await send_steps(db)
        await anyio.to_thread.run_sync(
            lambda: wait_for(
                lambda: len(deliveries(log, BY_KEY) + deliveries(log, STRICT)) >= 2 * total
            )
        )
    by_key = deliveries(log, BY_KEY)
    assert len(by_key) == total
    assert per_key(by_key) == {key: sent(key) for key in KEYS}
    assert len({pid for _, _, pid in by_key}) == 2  # the keys were shared
    strict = deliveries(log, STRICT)
    assert [seq for _, seq, _ in strict] == list(range(total))
    assert await rows(db) == []


async def test_a_failing_row_holds_back_only_its_key_across_relays(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    """
    A row that keeps failing holds back the later rows of its key in both relays, and no other
    key's: those are all delivered, in order.
    """
    total = len(KEYS) * ROUNDS
    with two_relays(db_url, tmp_path, AIOSIGNALS_TEST_FAIL_KEY="k3") as log:
        await send_steps(db)
        await anyio.to_thread.run_sync(
            lambda: wait_for(
                lambda: (
                    len(deliveries(log, BY_KEY)) >= total - ROUNDS
                    and len(deliveries(log, STRICT)) >= total
                )
            )
        )
        # Retried a few times meanwhile (backoff 0.05 s): still the first row of k3 only.
        await anyio.to_thread.run_sync(
            lambda: wait_for(lambda: len(deliveries(log, BY_KEY, "failing")) >= 3)
        )
    by_key = per_key(deliveries(log, BY_KEY))
    assert by_key == {key: sent(key) for key in KEYS if key != "k3"}
    assert {seq for _, seq, _ in deliveries(log, BY_KEY, "failing")} == {sent("k3")[0]}
    # The other receiver of the same sends is not held back at all.
    assert len(deliveries(log, STRICT)) == total


async def test_an_entitys_rows_share_a_key_and_other_entities_do_not(db: Database) -> None:
    """A model signal's rows are keyed by entity class and primary key."""
    orders = SQLAlchemyRepository(Order, db)
    first = await orders.add(Order(item="a"))
    second = await orders.add(Order(item="b"))
    await orders.save(first)
    keys = [row.ordering_key for row in await OutboxRelay(db).store.rows()]
    assert keys == [
        f"tests.outbox.app:Order:{first.id}",
        f"tests.outbox.app:Order:{second.id}",
        f"tests.outbox.app:Order:{first.id}",
    ]


async def test_any_text_is_an_ordering_key_and_each_keeps_its_own_order(db: Database) -> None:
    """A long incompressible key, or one with a NUL, is sent and delivered in its own order."""
    long_key = secrets.token_hex(5000)  # past PostgreSQL's limit for an index entry
    keys = [long_key, long_key + "x", "a\x00b", "a"]
    async with db.transaction():
        for seq in range(2):
            for key in keys:
                await step.send("tests", Step(ordering_key=key, seq=seq))
    stored = {row.ordering_key for row in await OutboxRelay(db).store.rows()}
    assert len(stored) == len(keys) + 1  # and the "receiver" ordering's one key
    await OutboxRelay(db).run_once()
    by_key = [(key, seq) for uid, key, seq in STEPS if uid == BY_KEY]
    assert sorted(by_key) == sorted((key, seq) for seq in range(2) for key in keys)
    for key in keys:
        assert [seq for k, seq in by_key if k == key] == [0, 1]
