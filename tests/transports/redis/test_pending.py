"""The pending entries list: claiming what dead consumers left, keeping what live ones hold."""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING, Any

import pytest

from aiosignals import Signal
from tests.transports import _app
from tests.transports._processes import records, stop_consumer
from tests.transports._support import (
    Greeting,
    eventually,
    in_hand,
    running,
)
from tests.transports.redis._processes import start_consumer, wait_for_consumers
from tests.transports.redis._streams import (
    GROUP,
    entries,
    pending,
    text,
)

if TYPE_CHECKING:
    from aiosignals.transports import (
        RedisStreamTransport,
    )

pytestmark = pytest.mark.redis


@pytest.mark.asyncio
async def test_entry_of_a_dead_consumer_is_claimed_and_a_crash_looping_one_dead_lettered(
    transport: RedisStreamTransport,
) -> None:
    """XAUTOCLAIM takes over idle pending entries; one delivered too often is dead-lettered."""
    greeting = Signal(Greeting, name="greeting")
    stream = transport.stream_name(greeting)
    client = transport.client
    seen: list[tuple[str, int]] = []

    @greeting.connect
    async def remember(sender: Any, payload: Greeting) -> None:
        message = in_hand()
        seen.append((payload.text, message.deliveries))

    await client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    orphan = await transport.publish(greeting, None, Greeting(text="orphan"))
    poison = await transport.publish(greeting, None, Greeting(text="poison"))
    # A consumer that read both and died; it had read the second again twice (restarts).
    await client.xreadgroup(GROUP, "dead-consumer", {stream: ">"}, count=2)
    for _ in range(2):
        await client.xclaim(stream, GROUP, "dead-consumer", 0, [poison])
    # Idle for a minute already, as if it had died then (JUSTID counts no delivery).
    await client.xclaim(
        stream, GROUP, "dead-consumer", 0, [orphan, poison], idle=60_000, justid=True
    )
    subscriber = transport.consumer([greeting], block=0.1, claim_idle=30, max_deliveries=3)
    async with running(subscriber):

        async def settled() -> bool:
            return subscriber.handled == 1 and subscriber.dead == 1

        await eventually(settled)
    assert seen == [("orphan", 2)]
    [(_, fields)] = await transport.dead_letters()
    assert fields["message_id"] == poison
    assert fields["error"].startswith("delivered 4 times (max_deliveries=3) without being")
    assert await pending(client, stream) == 0


@pytest.mark.asyncio
async def test_a_live_consumer_keeps_its_entries_however_long_its_receivers_take(
    transport: RedisStreamTransport,
) -> None:
    """Entries held longer than claim_idle (slow receivers, a waiting batch) are not claimed."""
    greeting = Signal(Greeting, name="greeting")
    started = asyncio.Event()
    handled: list[tuple[str, str, int]] = []

    @greeting.connect
    async def slow(sender: Any, payload: Greeting) -> None:
        message = in_hand()
        started.set()
        if message.consumer == "slow":
            # Each one runs more than twice claim_idle: a duration the test needs, so that
            # "eager" scans for idle entries while these are held; no order hangs on it.
            await asyncio.sleep(0.5)
        handled.append((payload.text, message.consumer, message.deliveries))

    for text_ in "abc":
        await transport.publish(greeting, None, Greeting(text=text_))
    slow_one = transport.consumer([greeting], consumer="slow", block=0.1, claim_idle=0.2)
    eager = transport.consumer([greeting], consumer="eager", block=0.1, claim_idle=0.2)
    async with running(slow_one):
        await asyncio.wait_for(started.wait(), 5)  # "slow" holds all three now.
        async with running(eager):

            async def all_handled() -> bool:
                return len(handled) == 3

            await eventually(all_handled)
    assert handled == [("a", "slow", 1), ("b", "slow", 1), ("c", "slow", 1)]
    assert eager.handled == 0


@pytest.mark.parametrize("batch_ack", [True, False])
@pytest.mark.asyncio
async def test_entries_of_a_consumer_killed_mid_batch_are_claimed_by_another(
    transport: RedisStreamTransport, redis_server_url: str, stream_prefix: str, batch_ack: bool
) -> None:
    """
    SIGKILL a consumer with a batch in hand: another claims its pending entries (claim_idle).

    Each entry runs to the end at least once. Acknowledging each batch (the default), the
    entries of the batch it had handled run again; acknowledging each entry, at most the one
    in hand when it died.
    """
    stream = transport.stream_name(_app.ping)
    options = () if batch_ack else ("--no-batch-ack",)
    slow = await start_consumer(
        redis_server_url, stream_prefix, "slow", delay=0.05, options=options
    )
    await wait_for_consumers(transport, {"slow"}, [slow])
    for n in range(100):
        await transport.publish(_app.ping, None, _app.Ping(n=n))

    async def mid_batch() -> bool:
        """It has handled a few entries and holds at least two more unacknowledged."""
        handled = await _app.reply(transport.client.llen(f"{stream_prefix}processed"))
        held = await transport.client.xpending_range(stream, GROUP, "-", "+", 100, "slow")
        return handled >= 3 and len(held) >= 2

    await eventually(mid_batch)
    slow.kill()
    await slow.wait()
    orphans = await transport.client.xpending_range(stream, GROUP, "-", "+", 100, "slow")
    assert orphans  # It died with a batch read and not acknowledged.
    orphan_ids = {text(row["message_id"]) for row in orphans}
    orphan_ns = {
        _app.Ping.model_validate_json(fields["payload"]).n
        for entry_id, fields in await entries(transport.client, stream)
        if entry_id in orphan_ids
    }

    rescuer = await start_consumer(redis_server_url, stream_prefix, "rescuer", claim_idle=0.3)
    try:

        async def all_handled() -> bool:
            handled = {n for _, n, _ in await records(transport.client, stream_prefix)}
            return handled == set(range(100)) and await pending(transport.client, stream) == 0

        await eventually(all_handled, timeout=20)
    finally:
        output = await stop_consumer(rescuer)
    handled = await records(transport.client, stream_prefix)
    claimed = {n for consumer, n, deliveries in handled if consumer == "rescuer" and deliveries > 1}
    assert claimed == orphan_ns, output
    # What ran twice: what it had handled but not acknowledged when it died, nothing else.
    by_slow = {n for consumer, n, _ in handled if consumer == "slow"}
    runs = collections.Counter(n for _, n, _ in handled)
    assert {n for n, times in runs.items() if times > 1} == by_slow & claimed
    assert max(runs.values()) == 2 or not by_slow & claimed
    if not batch_ack:
        # At most the entry in hand when it died (killed after its receiver, before XACK).
        assert len(by_slow & claimed) <= 1
