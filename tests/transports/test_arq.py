"""
Hand-off to arq: a job enqueued exactly when its transaction commits, at least once, run once.

The recipe of docs/transports.md: a durable receiver enqueues the job with the outbox
delivery's key as arq's ``_job_id``. The relay may enqueue it twice (killed after enqueuing,
before it recorded the row as done); arq refuses a job id it has queued or ran already, so
the job runs once. On the real Redis, with arq's own ``Worker``. arq pins redis<6 while the
rest of the suite runs on redis-py 8: these tests run in ``nox -s tests_arq`` and are skipped
elsewhere.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal as os_signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from aiosignals.outbox import OutboxRelay
from aiosignals.repository.sqlalchemy import Database
from tests._servers import require_arq

require_arq()

from arq.worker import Worker  # noqa: E402

from tests.transports import _arq_jobs  # noqa: E402
from tests.transports._arq_jobs import order_placed  # noqa: E402
from tests.transports._handoff import roll_back_then_commit  # noqa: E402

pytestmark = [
    pytest.mark.redis,
    pytest.mark.arq,
    # arq's Worker.close() calls redis-py's close(), deprecated in redis-py 5 for aclose().
    pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning"),
]
ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 30.0


@pytest_asyncio.fixture
async def queue(
    redis_server_url: str, stream_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    """An arq queue of this test's own; its keys (and the jobs') go with the stream prefix."""
    name = f"{stream_prefix}arq"
    monkeypatch.setenv("AIOSIGNALS_TEST_REDIS_URL", redis_server_url)
    monkeypatch.setenv("AIOSIGNALS_TEST_ARQ_QUEUE", name)
    try:
        yield name
    finally:
        await _arq_jobs.close_jobs()


async def run_worker() -> int:
    """Run an arq worker on the test queue until the queue is empty; return the jobs it ran."""
    worker = Worker(
        functions=[_arq_jobs.make_invoice],
        redis_settings=_arq_jobs.redis_settings(),
        queue_name=_arq_jobs.queue_name(),
        burst=True,
        handle_signals=False,
        poll_delay=0.05,
    )
    try:
        completed: int = await worker.run_check()
        return completed
    finally:
        await worker.close()


async def recorded(key: str) -> list[str]:
    pool = await _arq_jobs.jobs()
    return [row.decode() for row in await pool.lrange(key, 0, -1)]


@pytest.mark.asyncio
async def test_a_committed_transaction_enqueues_its_job_once_a_rolled_back_one_nothing(
    queue: str, stream_prefix: str, tmp_path: Path
) -> None:
    """A rolled-back send enqueues nothing; a committed one, one job keyed by its delivery."""
    name = f"{stream_prefix}shop"
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'shop.db'}", name=name) as db:
        await OutboxRelay.create_table(db)

        async def nothing_queued() -> None:
            assert await (await _arq_jobs.jobs()).zcard(queue) == 0

        await roll_back_then_commit(db, order_placed, nothing_queued)
        await nothing_queued()  # Nor after the commit, before the relay ran.
        assert await OutboxRelay(db).run_once() == 1
        assert await OutboxRelay(db).run_once() == 0
    assert await recorded(f"{queue}:enqueued") == ["new"]
    assert await run_worker() == 1
    (done,) = await recorded(f"{queue}:done")
    assert re.fullmatch(rf"2\|outbox:{re.escape(name)}:\d+\|1", done), done


@pytest.mark.asyncio
@pytest.mark.parametrize("ran_before", [False, True], ids=["job-queued", "job-done"])
async def test_a_relay_killed_after_enqueuing_redelivers_and_arq_runs_the_job_once(
    queue: str, stream_prefix: str, tmp_path: Path, ran_before: bool
) -> None:
    """A relay killed after enqueuing redelivers under the same job id, and arq runs it once."""
    name = f"{stream_prefix}shop"
    url = f"sqlite+aiosqlite:///{tmp_path / 'shop.db'}"
    async with Database(url, name=name) as db:
        await OutboxRelay.create_table(db)
        async with db.transaction():
            await order_placed.send(None, order_id=3)

    # --db-name: the killed relay and the next agree on the job id, which names the database.
    relay = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiosignals", "relay", "--db", url, "--db-name", name,
        "--app", "tests.transports._arq_jobs", "--lease", "1", "--poll-interval", "0.05",
        cwd=ROOT, env={**os.environ, _arq_jobs.HANG_AFTER_ENQUEUE: "1"},
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + TIMEOUT
        while not await recorded(f"{queue}:enqueued"):
            assert relay.returncode is None, (await relay.communicate())[1].decode()
            assert time.monotonic() < deadline, "the relay did not enqueue the job"
            await asyncio.sleep(0.05)
    finally:
        relay.send_signal(os_signal.SIGKILL)
        await relay.communicate()
    assert relay.returncode == -os_signal.SIGKILL

    if ran_before:  # arq then refuses the id by the job's kept result, not its queued job.
        assert await run_worker() == 1
    async with Database(url, name=name) as db:
        again = OutboxRelay(db, lease=1)
        deadline = time.monotonic() + TIMEOUT
        while not await again.run_once():  # The dead relay's lease (1 s) runs out first.
            assert time.monotonic() < deadline, "the row was not redelivered"
            await asyncio.sleep(0.05)
        assert await again.run_once() == 0
    assert await recorded(f"{queue}:enqueued") == ["new", "duplicate"]
    assert await run_worker() == (0 if ran_before else 1)
    (done,) = await recorded(f"{queue}:done")
    assert re.fullmatch(rf"3\|outbox:{re.escape(name)}:\d+\|1", done), done
