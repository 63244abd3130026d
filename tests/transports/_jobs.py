"""
The taskiq app of test_task_queues.py: a broker on the test Redis and one job.

``taskiq worker tests.transports._jobs:broker`` runs the job in a worker process; the job
records its argument and task id in the Redis list ``AIOSIGNALS_TEST_RECORD_KEY``.
"""

from __future__ import annotations

import os

import redis.asyncio as aioredis
from taskiq import Context, TaskiqDepends
from taskiq_redis import ListQueueBroker

URL = os.environ.get("AIOSIGNALS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
QUEUE = os.environ.get("AIOSIGNALS_TEST_QUEUE", "aiosignals-tests")

broker = ListQueueBroker(URL, queue_name=QUEUE)


# taskiq injects the context through a default of TaskiqDepends().
CONTEXT: Context = TaskiqDepends()


@broker.task(task_name="make_invoice")
async def make_invoice(order_id: int, context: Context = CONTEXT) -> None:
    """The job: records ``order_id|task_id`` so that the test sees it ran, and how often."""
    async with aioredis.Redis.from_url(URL) as client:
        await client.rpush(
            os.environ["AIOSIGNALS_TEST_RECORD_KEY"], f"{order_id}|{context.message.task_id}"
        )
