"""The Redis suites' transport: on the shared test server, under a prefix of the test's own."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from aiosignals.transports import RedisStreamTransport


@pytest_asyncio.fixture
async def transport(
    redis_server_url: str, stream_prefix: str
) -> AsyncIterator[RedisStreamTransport]:
    """A transport on the shared server; the keys under its prefix are deleted after."""
    async with RedisStreamTransport(redis_server_url, stream_prefix=stream_prefix) as transport:
        try:
            yield transport
        finally:
            keys = [key async for key in transport.client.scan_iter(match=f"{stream_prefix}*")]
            if keys:
                await transport.client.delete(*keys)
