"""
The signal and receiver that consumer processes of test_redis.py load with ``--app``.

The receiver records ``consumer|n|deliveries`` for each entry in the Redis list named by
``AIOSIGNALS_TEST_RECORD_KEY`` (on ``AIOSIGNALS_TEST_RECORD_URL``), after sleeping
``AIOSIGNALS_TEST_DELAY`` seconds, so a test can see which consumer handled what.
"""

from __future__ import annotations

import os

import anyio
import redis.asyncio as aioredis

from aiosignals import Event, Signal
from aiosignals.transports import current_message


class Ping(Event):
    n: int


ping = Signal(Ping, name="ping")

_clients: list[aioredis.Redis] = []


@ping.connect
async def record(sender: object, payload: Ping) -> None:
    delay = float(os.environ.get("AIOSIGNALS_TEST_DELAY", "0"))
    if delay:
        await anyio.sleep(delay)
    message = current_message()
    assert message is not None
    if not _clients:
        _clients.append(aioredis.Redis.from_url(os.environ["AIOSIGNALS_TEST_RECORD_URL"]))  # pyright: ignore[reportUnknownMemberType]
    await _clients[0].rpush(
        os.environ["AIOSIGNALS_TEST_RECORD_KEY"],
        f"{message.consumer}|{payload.n}|{message.deliveries}",
    )
