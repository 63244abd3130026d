"""
The arq app of test_arq.py: a durable receiver that enqueues a job, and the job.

The relay runs either in the test or in a subprocess (``aiosignals relay --app
tests.transports._arq_jobs``), so the receiver reads its Redis URL and queue from the
environment at its first call and opens its arq pool then, in the relay's event loop.
Each enqueue is recorded in ``<queue>:enqueued`` (``new`` or ``duplicate``), each run of the
job in ``<queue>:done`` (``order_id|job_id|job_try``), so that the test sees both.
"""

from __future__ import annotations

import os
from typing import Any

import anyio
from arq import ArqRedis, create_pool
from arq.connections import RedisSettings

from aiosignals import Event, Signal
from aiosignals.outbox import current_delivery

HANG_AFTER_ENQUEUE = "AIOSIGNALS_TEST_HANG_AFTER_ENQUEUE"
"""Set to 1 in a relay's environment: the receiver enqueues, then never returns."""


class OrderPlaced(Event):
    order_id: int


order_placed = Signal(OrderPlaced, name="tests.arq.order_placed")


def queue_name() -> str:
    return os.environ["AIOSIGNALS_TEST_ARQ_QUEUE"]


def redis_settings() -> RedisSettings:
    return RedisSettings.from_dsn(os.environ["AIOSIGNALS_TEST_REDIS_URL"])


_pool: ArqRedis | None = None


async def jobs() -> ArqRedis:
    """This process's arq pool, opened at the first enqueue."""
    global _pool
    if _pool is None:
        _pool = await create_pool(redis_settings(), default_queue_name=queue_name())
    return _pool


async def close_jobs() -> None:
    """Close the pool: the next test runs in an event loop of its own."""
    global _pool
    if _pool is not None:
        await _pool.aclose()
        _pool = None


@order_placed.connect(durable=True, dispatch_uid="tests.arq.enqueue_invoice")
async def enqueue_invoice(sender: object, payload: OrderPlaced) -> None:
    delivery = current_delivery()
    assert delivery is not None
    pool = await jobs()
    job = await pool.enqueue_job("make_invoice", payload.order_id, _job_id=delivery.key)
    # arq answers None for a job id it has queued or ran already: a redelivery.
    await pool.rpush(f"{queue_name()}:enqueued", "new" if job is not None else "duplicate")
    if os.environ.get(HANG_AFTER_ENQUEUE) == "1":
        await anyio.sleep_forever()  # Killed here: enqueued, the outbox row not finished.


async def make_invoice(ctx: dict[str, Any], order_id: int) -> None:
    """The job: records that it ran, with its id and try."""
    redis: ArqRedis = ctx["redis"]
    await redis.rpush(f"{queue_name()}:done", f"{order_id}|{ctx['job_id']}|{ctx['job_try']}")
