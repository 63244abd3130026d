"""Publishes issued concurrently share pipelines, in order, against a real redis-server."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import anyio
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from aiosignals import Event, Signal
from aiosignals.transports import RedisStreamTransport

pytestmark = pytest.mark.redis


class Numbered(Event):
    publisher: int
    n: int


numbered = Signal(Numbered, name="numbered")


@pytest_asyncio.fixture
async def transport(
    redis_server_url: str, stream_prefix: str
) -> AsyncIterator[RedisStreamTransport]:
    async with RedisStreamTransport(redis_server_url, stream_prefix=stream_prefix) as transport:
        yield transport


async def published(transport: RedisStreamTransport) -> list[tuple[str, Numbered]]:
    """The entries of the stream in stream order: (entry id, payload)."""
    rows = cast(
        "list[tuple[bytes, dict[bytes, bytes]]]",
        await transport.client.xrange(transport.stream_name(numbered)),
    )
    return [(i.decode(), Numbered.model_validate_json(f[b"payload"])) for i, f in rows]


async def connections_received(client: aioredis.Redis) -> int:
    info = await client.info("stats")
    return int(info["total_connections_received"])


@pytest.mark.asyncio
async def test_concurrent_publishes_share_one_connection_and_keep_their_order(
    transport: RedisStreamTransport, redis_server_url: str
) -> None:
    """1,500 publishes issued at once from one task: in issue order, over one connection."""
    async with aioredis.Redis.from_url(redis_server_url) as admin:  # pyright: ignore[reportUnknownMemberType]
        before = await connections_received(admin)
        ids = await asyncio.gather(
            *(transport.publish(numbered, None, Numbered(publisher=0, n=n)) for n in range(1500))
        )
        opened = await connections_received(admin) - before
    entries = await published(transport)
    assert [payload.n for _, payload in entries] == list(range(1500))
    assert ids == [entry_id for entry_id, _ in entries]  # Each call got its own entry's id.
    # One pipeline out at a time on one connection (unbatched, each call would take its own).
    assert opened == 1


@pytest.mark.asyncio
async def test_each_publishing_task_keeps_its_order(transport: RedisStreamTransport) -> None:
    """Five tasks, each issuing 300 publishes at once: each task's entries are in its order."""

    async def publisher(number: int) -> None:
        await asyncio.gather(
            *(
                transport.publish(numbered, None, Numbered(publisher=number, n=n))
                for n in range(300)
            )
        )

    async with asyncio.TaskGroup() as group:
        for number in range(5):
            group.create_task(publisher(number))
    entries = await published(transport)
    assert len(entries) == 1500
    for number in range(5):
        assert [p.n for _, p in entries if p.publisher == number] == list(range(300))


@pytest.mark.asyncio
async def test_an_error_reply_fails_only_its_own_publish(
    transport: RedisStreamTransport, stream_prefix: str
) -> None:
    """A publish to a key that is not a stream fails alone; its batch-mates are written."""
    other = Signal(Numbered, name="not-a-stream")
    await transport.client.set(transport.stream_name(other), "a string")
    results = await asyncio.gather(
        transport.publish(numbered, None, Numbered(publisher=0, n=0)),
        transport.publish(other, None, Numbered(publisher=0, n=1)),
        transport.publish(numbered, None, Numbered(publisher=0, n=2)),
        return_exceptions=True,
    )
    assert isinstance(results[1], aioredis.ResponseError)
    assert "WRONGTYPE" in str(results[1])
    entries = await published(transport)
    assert [entry_id for entry_id, _ in entries] == [results[0], results[2]]
    assert [p.n for _, p in entries] == [0, 2]


async def xadd_blocked(admin: aioredis.Redis) -> bool:
    """Whether a client's XADD is held by ``CLIENT PAUSE``."""
    clients = cast("list[dict[str, Any]]", await admin.client_list())
    return any(c["cmd"] == "xadd" and "b" in c["flags"] for c in clients)


@pytest.mark.asyncio
async def test_a_cancelled_publish_is_withdrawn_while_queued_and_never_reported_sent(
    transport: RedisStreamTransport, redis_server_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """
    Cancelled while queued behind a pipeline in flight, a publish writes nothing.

    Cancelled once its own pipeline is sent, it is written all the same, and a warning says
    so; neither returns an id, and the publishes after them are written as usual.
    """
    caplog.set_level(logging.WARNING, logger="aiosignals.redis")
    async with aioredis.Redis.from_url(redis_server_url) as admin:  # pyright: ignore[reportUnknownMemberType]
        await admin.client_pause(10_000, all=False)  # Writes only.
        try:
            in_flight = asyncio.create_task(
                transport.publish(numbered, None, Numbered(publisher=0, n=0))
            )
            deadline = time.monotonic() + 10
            while not await xadd_blocked(admin):
                assert time.monotonic() < deadline, "the first pipeline never reached Redis"
                await asyncio.sleep(0.01)
            queued = asyncio.create_task(
                transport.publish(numbered, None, Numbered(publisher=0, n=1))
            )
            await anyio.wait_all_tasks_blocked()  # It waits for the pipeline in flight.
            queued.cancel()
            in_flight.cancel()
            with pytest.raises(asyncio.CancelledError):
                await queued
            with pytest.raises(asyncio.CancelledError):
                await in_flight
            later = asyncio.create_task(
                transport.publish(numbered, None, Numbered(publisher=0, n=2))
            )
            await anyio.wait_all_tasks_blocked()
        finally:
            await admin.client_unpause()
        # Pipelines go one at a time: the first one's reply came before this one was sent.
        later_id = await later
    entries = await published(transport)
    assert [p.n for _, p in entries] == [0, 2]
    assert entries[1][0] == later_id
    [warning] = [r.getMessage() for r in caplog.records]
    assert "cancelled after its entry had been sent" in warning
    assert entries[0][0] in warning
