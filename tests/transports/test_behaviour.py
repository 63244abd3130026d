"""
What every transport promises, checked once against each: memory, Redis, RabbitMQ, NATS.

The memory transport runs on asyncio and trio; the broker transports on asyncio, as their
clients require.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, TypeAlias

import pytest

from aiosignals import Signal
from aiosignals.transports import (
    FastStreamTransport,
    MemoryTransport,
    RedisStreamTransport,
    StreamMessage,
    current_message,
)
from tests.transports._support import Greeting, Service, eventually, remove_topology, running

if TYPE_CHECKING:
    import redis.asyncio as aioredis

pytestmark = pytest.mark.anyio

AnyTransport: TypeAlias = MemoryTransport | RedisStreamTransport | FastStreamTransport

CASES = [
    pytest.param(("memory", "asyncio"), id="memory-asyncio"),
    pytest.param(("memory", "trio"), id="memory-trio"),
    pytest.param(("redis", "asyncio"), id="redis", marks=pytest.mark.redis),
    pytest.param(("rabbitmq", "asyncio"), id="rabbitmq", marks=pytest.mark.rabbitmq),
    pytest.param(("nats", "asyncio"), id="nats", marks=pytest.mark.nats),
]


@pytest.fixture(params=CASES)
def case(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(transport, event loop) of one run of the suite."""
    value: tuple[str, str] = request.param
    return value


@pytest.fixture
def anyio_backend(case: tuple[str, str]) -> str:
    """The event loop: trio only for the memory transport (the brokers' clients need asyncio)."""
    return case[1]


@pytest.fixture
async def transport(
    case: tuple[str, str], request: pytest.FixtureRequest
) -> AsyncIterator[AnyTransport]:
    """The transport of the case, with streams of the test's own, cleaned up after."""
    kind = case[0]
    if kind == "memory":
        with MemoryTransport() as memory:
            yield memory
    elif kind == "redis":
        url: str = request.getfixturevalue("redis_server_url")
        prefix: str = request.getfixturevalue("stream_prefix")
        async with RedisStreamTransport(url, stream_prefix=prefix) as redis_transport:
            yield redis_transport
    else:
        url = request.getfixturevalue(f"{kind}_url")
        prefix = f"t{uuid.uuid4().hex[:10]}."
        async with FastStreamTransport.from_url(url, prefix=prefix) as broker_transport:
            try:
                yield broker_transport
            finally:
                await remove_topology(broker_transport, prefix)


async def left_pending(transport: AnyTransport, signal: Signal[Any]) -> int:
    """How many messages of *signal* wait unacknowledged, where the transport can say."""
    if isinstance(transport, MemoryTransport):
        return transport.pending(signal)
    if isinstance(transport, RedisStreamTransport):
        client: aioredis.Redis = transport.client
        summary = await client.xpending(transport.stream_name(signal), transport.group)
        count: int = summary["pending"]
        return count
    return 0  # A broker's queue shows only what is not yet delivered.


async def test_roundtrip_with_typed_payload_sender_and_message(transport: AnyTransport) -> None:
    """A published send reaches the receivers typed, with its sender class and its message."""
    greeting = Signal(Greeting, name="greeting")
    seen: list[tuple[Any, Greeting, StreamMessage | None]] = []

    @greeting.connect(sender=Service)
    async def on_greeting(sender: Any, payload: Greeting) -> None:
        seen.append((sender, payload, current_message()))

    message_id = await transport.publish(greeting, Service, Greeting(text="hi"), key="k-1")
    await transport.publish(greeting, "someone else", Greeting(text="not for it"))
    consumer = transport.consumer([greeting], consumer="c1")
    async with running(consumer):
        await eventually(lambda: consumer.handled == 2)
    assert seen == [
        (
            Service,
            Greeting(text="hi"),
            StreamMessage(
                id=message_id,
                stream=transport.stream_name(greeting),
                signal="greeting",
                deliveries=1,
                key="k-1",
                group="aiosignals",
                consumer="c1",
            ),
        )
    ]
    assert seen[0][2] is not None
    assert seen[0][2].idempotency_key == "k-1"
    assert await left_pending(transport, greeting) == 0
