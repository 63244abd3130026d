"""
The signal and receiver that consumer processes of the transport suites load with ``--app``.

The receiver records ``consumer|n|deliveries`` for each entry in the Redis list named by
``AIOSIGNALS_TEST_RECORD_KEY`` (on ``AIOSIGNALS_TEST_RECORD_URL``), after sleeping
``AIOSIGNALS_TEST_DELAY`` seconds, so a test can see which consumer handled what. With
``AIOSIGNALS_TEST_HANG_AFTER`` set to k, every message after the first k is recorded in the
list ``<record key>:hung`` and never finishes: the process surely holds one when killed.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Awaitable
from typing import TypeVar, cast, overload

import anyio
import redis.asyncio as aioredis

from aiosignals import Event, Signal
from aiosignals.transports import current_message


class Ping(Event):
    n: int


ping = Signal(Ping, name="ping")

_clients: list[aioredis.Redis] = []
_handled = 0

T = TypeVar("T")


# Two overloads: mypy infers Never for "Awaitable[T] | T" given a bare Awaitable[X].
@overload
async def reply(value: Awaitable[T]) -> T: ...
@overload
async def reply(value: Awaitable[T] | T) -> T: ...
async def reply(value: Awaitable[T] | T) -> T:
    """
    Await a command of the asyncio client on redis-py 5 (typed ``Awaitable[T] | T``) and later.

    :param value: what the command returned.
    :return: its reply.
    """
    if inspect.isawaitable(value):
        return cast("T", await value)
    return value


@ping.connect
async def record(sender: object, payload: Ping) -> None:
    global _handled  # one consumer process, one count
    delay = float(os.environ.get("AIOSIGNALS_TEST_DELAY", "0"))
    if delay:
        await anyio.sleep(delay)
    message = current_message()
    assert message is not None
    if not _clients:
        _clients.append(aioredis.Redis.from_url(os.environ["AIOSIGNALS_TEST_RECORD_URL"]))  # pyright: ignore[reportUnknownMemberType]
    key = os.environ["AIOSIGNALS_TEST_RECORD_KEY"]
    hang_after = os.environ.get("AIOSIGNALS_TEST_HANG_AFTER")
    if hang_after and _handled >= int(hang_after):
        await reply(_clients[0].rpush(f"{key}:hung", f"{message.consumer}|{payload.n}"))
        await anyio.sleep_forever()
    _handled += 1
    await reply(
        _clients[0].rpush(
            key,
            f"{message.consumer}|{payload.n}|{message.deliveries}",
        )
    )
