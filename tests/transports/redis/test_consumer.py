"""RedisConsumer: handling, acknowledging, retrying, dead-lettering and stopping."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import anyio
import pytest
import redis.asyncio as aioredis

from aiosignals import Signal
from tests.transports._support import (
    SERVICE_LABEL,
    Greeting,
    Service,
    eventually,
    in_hand,
    running,
)
from tests.transports.redis._streams import (
    GROUP,
    add,
    consumer_names,
    pending,
)

if TYPE_CHECKING:
    from aiosignals.transports import (
        RedisConsumer,
        RedisStreamTransport,
        SubscriberOptions,
    )

pytestmark = pytest.mark.redis


@pytest.mark.asyncio
async def test_names_resolve_through_the_registry_and_explicit_signals_win(
    transport: RedisStreamTransport,
) -> None:
    """A name is looked up in the registry of named signals; a mapping's signal wins."""
    registered = Signal(Greeting, name="by-name")
    shadowed = Signal(Greeting, name="explicit")
    explicit = Signal(Greeting, name="explicit-other")
    got: list[str] = []

    async def tag(label: str, sender: Any, payload: Greeting) -> None:
        got.append(f"{label}:{payload.text}")

    registered.connect(lambda s, p: tag("registered", s, p))
    shadowed.connect(lambda s, p: tag("shadowed", s, p))
    explicit.connect(lambda s, p: tag("explicit", s, p))
    await transport.publish(registered, None, Greeting(text="a"))
    await transport.publish(shadowed, None, Greeting(text="b"))
    subscriber = transport.consumer({"explicit": explicit}, block=0.2)
    other = transport.consumer(["by-name"], block=0.2)
    assert subscriber.streams == [f"{transport.stream_prefix}explicit"]
    async with running(subscriber), running(other):

        async def both() -> bool:
            return subscriber.handled + other.handled == 2

        await eventually(both)
    assert sorted(got) == ["explicit:b", "registered:a"]


@pytest.mark.asyncio
async def test_ack_only_after_receivers_ran_and_failure_is_retried(
    transport: RedisStreamTransport,
) -> None:
    """The entry is pending while receivers run; a failed send leaves it pending, then retried."""
    greeting = Signal(Greeting, name="greeting")
    stream = transport.stream_name(greeting)
    attempts: list[tuple[int, int]] = []

    @greeting.connect
    async def flaky(sender: Any, payload: Greeting) -> None:
        message = in_hand()
        attempts.append((message.deliveries, await pending(transport.client, stream)))
        if message.deliveries == 1:
            raise RuntimeError("first delivery fails")

    await transport.publish(greeting, None, Greeting(text="x"))
    subscriber = transport.consumer([greeting], block=0.1, retry_delay=0.2)
    async with running(subscriber):

        async def failed_once() -> bool:
            return subscriber.failed == 1

        await eventually(failed_once)
        assert await pending(transport.client, stream) == 1

        async def handled() -> bool:
            return subscriber.handled == 1

        await eventually(handled)
    # Pending while the receiver ran, both times; acknowledged only after the success.
    assert attempts == [(1, 1), (2, 1)]
    assert await pending(transport.client, stream) == 0
    assert await transport.dead_letters() == []


@pytest.mark.parametrize(
    ("batch_ack", "expected"), [(False, [3, 2, 1]), (True, [3, 3, 3]), (None, [3, 3, 3])]
)
@pytest.mark.asyncio
async def test_each_entry_is_acked_after_its_receivers_or_the_batch_after_the_last(
    transport: RedisStreamTransport, batch_ack: bool | None, expected: list[int]
) -> None:
    """
    Entries pending as each receiver runs: one less each time, or all until the batch ends.

    Batches are the default (``batch_ack`` not given).
    """
    greeting = Signal(Greeting, name="greeting")
    stream = transport.stream_name(greeting)
    seen: list[int] = []

    @greeting.connect
    async def count_pending(sender: Any, payload: Greeting) -> None:
        seen.append(await pending(transport.client, stream))

    for text_ in "abc":
        await transport.publish(greeting, None, Greeting(text=text_))
    options: SubscriberOptions = {"block": 0.1}
    if batch_ack is not None:
        options["batch_ack"] = batch_ack
    subscriber = transport.consumer([greeting], **options)
    async with running(subscriber):

        async def all_acked() -> bool:
            return subscriber.handled == 3 and await pending(transport.client, stream) == 0

        await eventually(all_acked)
    assert seen == expected


@pytest.mark.asyncio
async def test_receiver_failing_every_time_ends_in_the_dead_letter_stream(
    transport: RedisStreamTransport,
) -> None:
    """After max_deliveries failed sends the entry is dead-lettered with the error and acked."""
    greeting = Signal(Greeting, name="greeting")
    deliveries: list[int] = []

    @greeting.connect
    async def broken(sender: Any, payload: Greeting) -> None:
        message = in_hand()
        deliveries.append(message.deliveries)
        raise RuntimeError("boom")

    entry_id = await transport.publish(greeting, Service, Greeting(text="x"), key="k")
    subscriber = transport.consumer([greeting], block=0.1, retry_delay=0.05, max_deliveries=3)
    async with running(subscriber):

        async def dead() -> bool:
            return subscriber.dead == 1

        await eventually(dead)
    assert deliveries == [1, 2, 3]
    [(_, fields)] = await transport.dead_letters()
    assert fields == {
        "payload": '{"text":"x"}',
        "sender": SERVICE_LABEL,
        "key": "k",
        "error": "RuntimeError: boom (after 3 deliveries)",
        "stream": transport.stream_name(greeting),
        "message_id": entry_id,
        "deliveries": "3",
        "group": GROUP,
        "consumer": subscriber.name,
    }
    assert await pending(transport.client, transport.stream_name(greeting)) == 0


@pytest.mark.asyncio
async def test_malformed_entries_reach_the_dead_letter_stream_with_the_error(
    transport: RedisStreamTransport,
) -> None:
    """
    Bad JSON, invalid or missing payloads are dead-lettered at once, unknown names after retries.
    """
    greeting = Signal(Greeting, name="greeting")
    handled: list[str] = []

    @greeting.connect
    async def ok(sender: Any, payload: Greeting) -> None:
        handled.append(payload.text)

    stream = transport.stream_name(greeting)
    ghost = f"{transport.stream_prefix}ghost"
    client = transport.client
    bad_json_id = await add(client, stream, {"payload": "{not json", "sender": ""})
    invalid_id = await add(client, stream, {"payload": '{"wrong": 1}', "error": "mine"})
    missing_id = await add(client, stream, {"sender": "x"})
    unknown_id = await add(client, ghost, {"payload": "{}"})
    await transport.publish(greeting, None, Greeting(text="still handled"))
    subscriber = transport.consumer(
        [greeting, "ghost"], block=0.1, retry_delay=0.05, max_deliveries=2
    )
    async with running(subscriber):

        async def all_done() -> bool:
            return subscriber.dead == 4 and subscriber.handled == 1

        await eventually(all_done)
    assert handled == ["still handled"]
    # Entry ids are per stream: the ghost entry may have the id of one in the other stream.
    dead = {
        (fields["stream"], fields["message_id"]): fields
        for _, fields in await transport.dead_letters()
    }
    bad_json, invalid, missing = ((stream, i) for i in (bad_json_id, invalid_id, missing_id))
    unknown = (ghost, unknown_id)
    assert set(dead) == {bad_json, invalid, missing, unknown}

    assert dead[bad_json]["payload"] == "{not json"
    assert dead[bad_json]["sender"] == ""
    assert dead[bad_json]["error"].startswith("payload does not validate as Greeting")
    assert "Invalid JSON" in dead[bad_json]["error"]
    assert dead[bad_json]["deliveries"] == "1"  # Not retried: it cannot get better.

    assert "text: Field required (missing)" in dead[invalid]["error"]
    assert dead[invalid]["original_error"] == "mine"  # An original field is never lost.
    assert dead[invalid]["deliveries"] == "1"

    assert dead[missing]["error"] == "the entry has no 'payload' field"
    assert dead[missing]["sender"] == "x"

    assert dead[unknown]["error"] == (
        "no signal named 'ghost' in this process (after 2 deliveries)"
    )
    assert dead[unknown]["stream"] == ghost
    assert dead[unknown]["deliveries"] == "2"
    assert await pending(client, stream) == 0
    assert await pending(client, ghost) == 0


@pytest.mark.asyncio
async def test_stop_finishes_the_entry_in_hand(transport: RedisStreamTransport) -> None:
    """stop() during a receiver lets it finish and acknowledges the entry before run() returns."""
    greeting = Signal(Greeting, name="greeting")
    started, release = asyncio.Event(), asyncio.Event()
    finished: list[str] = []

    @greeting.connect
    async def held(sender: Any, payload: Greeting) -> None:
        started.set()
        await release.wait()
        finished.append(payload.text)

    await transport.publish(greeting, None, Greeting(text="a"))
    await transport.publish(greeting, None, Greeting(text="b"))
    subscriber = transport.consumer([greeting], block=0.1)
    task = asyncio.create_task(subscriber.run())
    await asyncio.wait_for(started.wait(), 5)
    subscriber.stop()  # While "a"'s receiver runs: it is finished, "b" is not started.
    release.set()
    await asyncio.wait_for(task, 5)
    assert finished == ["a"]
    assert subscriber.handled == 1
    # "b" was read with "a" and stays pending for this consumer's next run.
    assert await pending(transport.client, transport.stream_name(greeting)) == 1
    await asyncio.wait_for(asyncio.gather(subscriber.run(), _stop_when(subscriber, 2)), 5)
    assert finished == ["a", "b"]
    assert await pending(transport.client, transport.stream_name(greeting)) == 0


async def _stop_when(subscriber: RedisConsumer, handled: int) -> None:
    async def done() -> bool:
        return subscriber.handled >= handled

    await eventually(done)
    subscriber.stop()


@pytest.mark.asyncio
async def test_stop_interrupts_a_blocking_read_and_run_twice_is_refused(
    transport: RedisStreamTransport,
) -> None:
    """An idle consumer stops at once, whatever its block; a second run() meanwhile raises."""
    greeting = Signal(Greeting, name="greeting")
    subscriber = transport.consumer([greeting], consumer="idle", block=30)
    task = asyncio.create_task(subscriber.run())

    async def reading() -> bool:
        try:
            stream = transport.stream_name(greeting)
            return len(await transport.client.xinfo_consumers(stream, GROUP)) == 1
        except aioredis.ResponseError:
            return False  # No stream or group yet.

    await eventually(reading)
    with pytest.raises(RuntimeError, match="already running"):
        await subscriber.run()
    started = time.monotonic()
    subscriber.stop()
    await asyncio.wait_for(task, 5)
    assert time.monotonic() - started < 1


@pytest.mark.asyncio
async def test_a_clean_stop_leaves_the_group_unless_entries_are_pending(
    transport: RedisStreamTransport,
) -> None:
    """
    After a clean stop a consumer with nothing pending is removed from the group, so restarts
    under new names do not pile up; one with pending entries stays, so they can be claimed.
    """
    greeting = Signal(Greeting, name="greeting")
    other = Signal(Greeting, name="other")
    stream, other_stream = transport.stream_name(greeting), transport.stream_name(other)
    started, release = asyncio.Event(), asyncio.Event()

    @greeting.connect
    async def slow(sender: Any, payload: Greeting) -> None:
        if payload.text == "slow":
            started.set()
            await release.wait()

    await transport.publish(greeting, None, Greeting(text="a"))
    done = transport.consumer([greeting, other], consumer="done", block=0.1)
    await asyncio.wait_for(asyncio.gather(done.run(), _stop_when(done, 1)), 5)
    assert "done" not in await consumer_names(transport.client, stream)
    assert "done" not in await consumer_names(transport.client, other_stream)

    # "slow" and "left" are read together; stopped during "slow", "left" stays pending.
    await transport.publish(greeting, None, Greeting(text="slow"))
    await transport.publish(greeting, None, Greeting(text="left"))
    busy = transport.consumer([greeting, other], consumer="busy", block=0.1)
    task = asyncio.create_task(busy.run())
    await asyncio.wait_for(started.wait(), 5)
    busy.stop()
    release.set()
    await asyncio.wait_for(task, 5)
    assert (await consumer_names(transport.client, stream))["busy"] == 1
    assert "busy" not in await consumer_names(
        transport.client, other_stream
    )  # Nothing pending there.
    assert await pending(transport.client, stream) == 1


@pytest.mark.asyncio
async def test_cancelling_run_leaves_the_entry_pending(transport: RedisStreamTransport) -> None:
    """Cancelling the task cancels the receiver; the entry is not acknowledged."""
    greeting = Signal(Greeting, name="greeting")
    started = asyncio.Event()

    @greeting.connect
    async def stuck(sender: Any, payload: Greeting) -> None:
        started.set()
        await asyncio.sleep(60)

    await transport.publish(greeting, None, Greeting(text="a"))
    subscriber = transport.consumer([greeting], block=0.1)
    task = asyncio.create_task(subscriber.run())
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await pending(transport.client, transport.stream_name(greeting)) == 1


@pytest.mark.asyncio
async def test_run_cancelled_by_a_cancel_scope_can_run_again(
    transport: RedisStreamTransport,
) -> None:
    """
    A run() cancelled through an anyio cancel scope (as the integrations' stop deadline does)
    leaves the subscriber ready to run again, and the next run handles the entry.
    """
    greeting = Signal(Greeting, name="greeting")
    started = asyncio.Event()
    handled: list[str] = []

    @greeting.connect
    async def stuck_once(sender: Any, payload: Greeting) -> None:
        if not started.is_set():
            started.set()
            await asyncio.sleep(60)
        handled.append(payload.text)

    await transport.publish(greeting, None, Greeting(text="a"))
    subscriber = transport.consumer([greeting], block=0.1)
    with anyio.move_on_after(5) as scope:
        async with anyio.create_task_group() as group:
            group.start_soon(subscriber.run)
            await started.wait()
            group.cancel_scope.cancel()
    assert not scope.cancelled_caught
    # Cancelled again while idle in a blocking read, this time by a deadline.
    with anyio.move_on_after(0.3):
        await subscriber.run()
    assert handled == ["a"]  # The cancelled receiver's entry stayed pending, then ran.
    await transport.publish(greeting, None, Greeting(text="b"))
    await asyncio.wait_for(asyncio.gather(subscriber.run(), _stop_when(subscriber, 2)), 5)
    assert handled == ["a", "b"]
    assert await pending(transport.client, transport.stream_name(greeting)) == 0
