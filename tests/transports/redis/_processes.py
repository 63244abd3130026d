"""``aiosignals consume --redis`` processes for the Redis suites."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
import redis.asyncio as aioredis

from tests.transports import _app
from tests.transports._processes import start_consume
from tests.transports._support import eventually
from tests.transports.redis._streams import GROUP, text

if TYPE_CHECKING:
    from aiosignals.transports import RedisStreamTransport


async def start_consumer(
    url: str,
    prefix: str,
    name: str,
    *,
    delay: float = 0.0,
    claim_idle: float = 30.0,
    options: tuple[str, ...] = (),
) -> asyncio.subprocess.Process:
    """Run ``aiosignals consume --redis`` in a new process, recording in the same Redis."""
    return await start_consume(
        ("--redis", url),
        url,
        prefix,
        name,
        "--claim-idle",
        str(claim_idle),
        *options,
        delay=delay,
    )


async def wait_for_consumers(
    transport: RedisStreamTransport, names: set[str], processes: list[asyncio.subprocess.Process]
) -> None:
    """Wait until the consumers *names* have joined the group; fail if a process exits."""
    stream = transport.stream_name(_app.ping)

    async def registered() -> bool:
        for process in processes:
            if process.returncode is not None:
                _, stderr = await process.communicate()
                pytest.fail(f"consumer exited {process.returncode}: {stderr.decode()}")
        try:
            consumers = await transport.client.xinfo_consumers(stream, GROUP)
        except aioredis.ResponseError:
            return False  # The group is not created yet.
        return {text(c["name"]) for c in consumers} >= names

    await eventually(registered, timeout=20)
