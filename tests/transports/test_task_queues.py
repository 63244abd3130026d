"""
Hand-off to a task queue: a job enqueued exactly when its transaction commits, at least once.

The recipe of the README: a durable receiver enqueues the job, so the outbox row is written
with the entity and the relay enqueues it after the commit (never on rollback), retrying
until the queue has it. The outbox delivery id is the job's task id: the same on every
retry, so the worker can de-duplicate. Here with taskiq on the real Redis, and a real
``taskiq worker`` process running the job.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal as os_signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from aiosignals import Event, Signal
from aiosignals.outbox import OutboxRelay, current_delivery
from aiosignals.repository.sqlalchemy import Database
from tests.transports._handoff import roll_back_then_commit

pytestmark = pytest.mark.redis
ROOT = Path(__file__).resolve().parents[2]


class OrderPlaced(Event):
    order_id: int


@pytest_asyncio.fixture
async def queue(redis_server_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    """The taskiq app (tests/transports/_jobs.py) on a queue of this test's own."""
    name = f"jobs-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("AIOSIGNALS_TEST_REDIS_URL", redis_server_url)
    monkeypatch.setenv("AIOSIGNALS_TEST_QUEUE", name)
    monkeypatch.setenv("AIOSIGNALS_TEST_RECORD_KEY", f"{name}:done")
    sys.modules.pop("tests.transports._jobs", None)  # Read the environment afresh.
    from tests.transports import _jobs

    await _jobs.broker.startup()
    try:
        yield name
    finally:
        await _jobs.broker.shutdown()
        async with aioredis.Redis.from_url(redis_server_url) as client:
            await client.delete(name, f"{name}:done")


@pytest.mark.asyncio
async def test_a_job_is_enqueued_after_commit_never_on_rollback_and_runs_in_a_worker(
    queue: str, redis_server_url: str, tmp_path: Path
) -> None:
    """Rollback: no job. Commit: the relay enqueues one, keyed by the delivery; a worker runs it."""
    from tests.transports import _jobs

    order_placed = Signal(OrderPlaced, name="order_placed")

    @order_placed.connect(durable=True, dispatch_uid="tests.enqueue_invoice")
    async def enqueue_invoice(sender: object, payload: OrderPlaced) -> None:
        delivery = current_delivery()
        assert delivery is not None
        await _jobs.make_invoice.kicker().with_task_id(delivery.key).kiq(payload.order_id)

    client = aioredis.Redis.from_url(redis_server_url)
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'shop.db'}", name="shop") as db:
        await OutboxRelay.create_table(db)

        async def nothing_queued() -> None:
            assert await client.llen(queue) == 0

        await roll_back_then_commit(db, order_placed, nothing_queued)
        assert await client.llen(queue) == 0  # Not before the relay ran.
        assert await OutboxRelay(db).run_once() == 1
        assert await client.llen(queue) == 1
        assert await OutboxRelay(db).run_once() == 0

    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "taskiq", "worker", "tests.transports._jobs:broker",
        "--workers", "1", "--no-configure-logging",
        cwd=ROOT, env=dict(os.environ), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while await client.llen(f"{queue}:done") < 1:
            assert worker.returncode is None, (await worker.communicate())[1].decode()
            assert time.monotonic() < deadline, "the worker did not run the job"
            await asyncio.sleep(0.05)
        done = [
            row.decode() if isinstance(row, bytes) else row
            for row in await client.lrange(f"{queue}:done", 0, -1)
        ]
        assert len(done) == 1
        order_id, task_id = done[0].split("|")
        assert order_id == "2"
        # The delivery's key: the database's name and the row id.
        assert re.fullmatch(r"outbox:shop:\d+", task_id), task_id
    finally:
        worker.send_signal(os_signal.SIGTERM)
        try:
            await asyncio.wait_for(worker.wait(), 15)
        except TimeoutError:
            worker.kill()
            await worker.wait()
        await client.aclose()
