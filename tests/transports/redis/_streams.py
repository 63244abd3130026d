"""What the Redis suites share: reading a stream and its pending entries list as they are."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import redis.asyncio as aioredis

GROUP = "aiosignals"
"""The transport's default consumer group."""


def text(value: object) -> str:
    """A reply value as text, whether the client decodes replies or not."""
    return value.decode() if isinstance(value, bytes) else str(value)


async def entries(client: aioredis.Redis, stream: str) -> list[tuple[str, dict[str, str]]]:
    """The entries of *stream*, decoded: (entry id, fields)."""
    rows = cast("list[tuple[bytes, dict[bytes, bytes]]]", await client.xrange(stream))
    return [(text(i), {text(k): text(v) for k, v in fields.items()}) for i, fields in rows]


async def add(client: aioredis.Redis, stream: str, fields: dict[str, str]) -> str:
    """XADD raw *fields*, as a foreign or broken publisher would; return the entry id."""
    return text(await client.xadd(stream, cast("Any", fields)))


async def pending(client: aioredis.Redis, stream: str) -> int:
    """How many entries of *stream* the group has read and not acknowledged."""
    summary = await client.xpending(stream, GROUP)
    count: int = summary["pending"]
    return count


async def consumer_names(client: aioredis.Redis, stream: str) -> dict[str, int]:
    """The consumers of the group on *stream*, with their pending counts."""
    consumers = await client.xinfo_consumers(stream, GROUP)
    return {text(c["name"]): int(c["pending"]) for c in consumers}
