"""What the transport suites share: the payload and sender they send, and how they wait."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING

import anyio
import pytest

from aiosignals import Event
from aiosignals.transports import Consumer, StreamMessage, current_message

if TYPE_CHECKING:
    from aiosignals.transports import FastStreamTransport


class Greeting(Event):
    text: str


class Service:
    """A sender class: it travels as ``module:qualname`` and comes back as itself."""


SERVICE_LABEL = f"{__name__}:Service"
"""How :class:`Service` travels."""


async def eventually(
    check: Callable[[], bool] | Callable[[], Awaitable[bool]], timeout: float = 15.0
) -> None:
    """Wait until *check* (a function or a coroutine function) holds; fail after *timeout* s."""
    deadline = anyio.current_time() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if anyio.current_time() > deadline:
            pytest.fail(f"still false after {timeout} s: {check.__doc__ or check}")
        await anyio.sleep(0.005)


@asynccontextmanager
async def running(consumer: Consumer, timeout: float = 15.0) -> AsyncIterator[None]:
    """Run *consumer* for the block; stop it on the way out and fail if it does not stop."""
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(consumer.run)
        try:
            yield
        finally:
            consumer.stop()
            tasks.cancel_scope.deadline = anyio.current_time() + timeout
    if tasks.cancel_scope.cancelled_caught:
        pytest.fail(f"{consumer!r} did not stop within {timeout} s")


def in_hand() -> StreamMessage:
    """Return the message the calling receiver was given (it must have been given one)."""
    message = current_message()
    assert message is not None
    return message


async def remove_topology(transport: FastStreamTransport, prefix: str) -> None:
    """Delete what a test created on the shared broker: queues and exchange, or the stream."""
    connection = await transport.broker.connect()
    if transport.adapter.kind == "RabbitMQ":
        channel = await connection.channel()
        for name in ("greeting", "ping", "x", "dead"):
            for group in ("aiosignals", "audit", "dead"):
                await channel.queue_delete(f"{prefix}{name}.{group}")
        await channel.exchange_delete(prefix.rstrip("."))
        await channel.close()
    else:
        from nats.js.errors import NotFoundError

        with suppress(NotFoundError):
            await connection.jetstream().delete_stream(prefix.rstrip("."))
