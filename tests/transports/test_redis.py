"""The Redis Streams transport, against a real redis-server."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import inspect
import logging
import os
import signal as os_signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import anyio
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict

from aiosignals import Event, Signal
from aiosignals._cli import main as cli_main
from aiosignals.models import PostSave, post_save
from aiosignals.transports import (
    RedisStreamTransport,
    StreamMessage,
    Subscriber,
    SubscriberOptions,
    current_message,
)
from aiosignals.transports._cli import load_signals
from aiosignals.transports._redis import resolve_sender, sender_label
from tests import _servers
from tests.transports import _app

if TYPE_CHECKING:
    from tests._servers import RedisProcess

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parents[2]
GROUP = "aiosignals"


@dataclasses.dataclass
class Note:
    id: int
    text: str


class Greeting(Event):
    text: str


class Service:
    """A sender class: it travels as ``module:qualname`` and comes back as itself."""


@pytest_asyncio.fixture
async def transport(
    redis_server_url: str, stream_prefix: str
) -> AsyncIterator[RedisStreamTransport]:
    async with RedisStreamTransport(redis_server_url, stream_prefix=stream_prefix) as transport:
        try:
            yield transport
        finally:
            keys = [key async for key in transport.client.scan_iter(match=f"{stream_prefix}*")]
            if keys:
                await transport.client.delete(*keys)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Wait until *check* holds, failing the test after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"still false after {timeout} s: {check.__doc__ or check}")
        await asyncio.sleep(0.02)


@asynccontextmanager
async def running(subscriber: Subscriber) -> AsyncIterator[asyncio.Task[None]]:
    """Run *subscriber* in a task for the block; stop it (and wait) on the way out."""
    task = asyncio.create_task(subscriber.run())
    try:
        yield task
    finally:
        subscriber.stop()
        await asyncio.wait_for(task, 10)


def text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def entries(client: aioredis.Redis, stream: str) -> list[tuple[str, dict[str, str]]]:
    """The entries of *stream*, decoded: (entry id, fields)."""
    rows = cast("list[tuple[bytes, dict[bytes, bytes]]]", await client.xrange(stream))
    return [(text(i), {text(k): text(v) for k, v in fields.items()}) for i, fields in rows]


async def add(client: aioredis.Redis, stream: str, fields: dict[str, str]) -> str:
    """XADD raw *fields*, as a foreign or broken publisher would; return the entry id."""
    return text(await client.xadd(stream, cast("Any", fields)))


async def pending(client: aioredis.Redis, stream: str) -> int:
    summary = await client.xpending(stream, GROUP)
    count: int = summary["pending"]
    return count


def test_the_stream_prefix_fixture_deletes_its_keys(redis_server_url: str) -> None:
    """After its test, ``stream_prefix`` deletes the keys under the prefix, and only those."""
    import redis

    fixture = cast("Callable[[], Iterator[str]]", inspect.unwrap(_servers.stream_prefix))
    steps = fixture()
    prefix = next(steps)
    other = f"{prefix[:-1]}-other"  # Shares all but the prefix's final ":".
    with redis.Redis.from_url(redis_server_url) as client:
        try:
            client.xadd(f"{prefix}greeting", {"payload": "{}"})
            client.set(f"{prefix}processed", "1")
            client.set(other, "1")
            with pytest.raises(StopIteration):
                next(steps)
            assert list(client.scan_iter(match=f"{prefix}*")) == []
            assert client.get(other) == b"1"
        finally:
            client.delete(f"{prefix}greeting", f"{prefix}processed", other)


# -- publishing --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_publish_writes_payload_json_sender_label_and_key(
    transport: RedisStreamTransport,
) -> None:
    """An entry holds the payload's pydantic JSON, the sender's module:qualname and the key."""
    greeting = Signal(Greeting, name="greeting")
    entry_id = await transport.publish(greeting, Service, Greeting(text="hi"), key="k-1")
    assert await entries(transport.client, f"{transport.stream_prefix}greeting") == [
        (entry_id, {"payload": '{"text":"hi"}', "sender": f"{__name__}:Service", "key": "k-1"})
    ]


@pytest.mark.asyncio
async def test_publish_validates_a_payload_of_another_type(
    transport: RedisStreamTransport,
) -> None:
    """A dict payload is validated into the payload type, as send() does; bad ones raise."""
    from pydantic import ValidationError

    greeting = Signal(Greeting, name="greeting")
    await transport.publish(greeting, None, cast("Greeting", {"text": "from a dict"}))
    [(_, fields)] = await entries(transport.client, f"{transport.stream_prefix}greeting")
    assert fields == {"payload": '{"text":"from a dict"}', "sender": ""}
    with pytest.raises(ValidationError):
        await transport.publish(greeting, None, cast("Greeting", {"nope": 1}))


@pytest.mark.asyncio
async def test_unnamed_signal_is_a_clear_value_error(transport: RedisStreamTransport) -> None:
    """A signal without a name has no stream: publish, forward and consumer say so."""
    anonymous = Signal(Greeting)
    with pytest.raises(ValueError, match="has no name"):
        await transport.publish(anonymous, None, Greeting(text="x"))
    with pytest.raises(ValueError, match="has no name"):
        transport.forward(anonymous)
    with pytest.raises(ValueError, match="has no name"):
        transport.consumer([anonymous])
    with pytest.raises(ValueError, match="dead-letter stream"):
        transport.consumer(["dead"])


def test_sender_labels_round_trip_classes_only_when_already_imported() -> None:
    """Classes come back as themselves; None as None; other senders stay strings."""
    assert sender_label(Service) == f"{__name__}:Service"
    assert resolve_sender(sender_label(Service)) is Service
    assert resolve_sender(sender_label(None)) is None
    assert sender_label(42) == "42"
    assert resolve_sender("42") == "42"
    # A module that is not imported is never imported on behalf of a message.
    assert resolve_sender("not_imported_module_xyz:Thing") == "not_imported_module_xyz:Thing"
    assert "not_imported_module_xyz" not in sys.modules
    assert resolve_sender(f"{__name__}:GROUP") == f"{__name__}:GROUP"  # not a class


def test_current_message_is_none_outside_a_consumer() -> None:
    """Receivers called by a plain send see no stream entry."""
    assert current_message() is None


def test_the_hiredis_extra_makes_redis_py_parse_replies_with_hiredis() -> None:
    """``aiosignals[hiredis]`` (in ``all``) installs hiredis, which redis-py then parses with."""
    import importlib.metadata

    requires = importlib.metadata.requires("aiosignals") or []
    assert "redis[hiredis]>=5.0.1; extra == 'hiredis'" in requires
    assert "redis[hiredis]>=5.0.1; extra == 'all'" in requires
    pytest.importorskip("hiredis", reason="the hiredis extra is not installed")
    from redis._parsers import _AsyncHiredisParser  # pyright: ignore[reportPrivateUsage]
    from redis.asyncio.connection import DefaultParser
    from redis.utils import HIREDIS_AVAILABLE

    # No switch of ours: every connection a transport opens gets redis-py's default parser.
    assert HIREDIS_AVAILABLE
    assert DefaultParser is _AsyncHiredisParser


def test_import_without_the_extra_names_it() -> None:
    """Without redis-py, importing aiosignals.transports says which extra to install."""
    code = "import sys; sys.modules['redis'] = None; import aiosignals.transports"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert result.returncode == 1
    assert 'ImportError: aiosignals.transports needs redis-py: pip install "aiosignals[redis]"' in (
        result.stderr
    )


# -- forwarding --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_forward_publishes_sends_once_and_unforward_stops(
    transport: RedisStreamTransport,
) -> None:
    """forward() connects one durable receiver that publishes each send (autocommit here)."""
    greeting = Signal(Greeting, name="greeting")
    stream = transport.stream_name(greeting)
    transport.forward(greeting)
    transport.forward(greeting)  # Already forwarded: nothing more is connected.
    assert len(greeting.receivers_for(Service)) == 1
    await greeting.send(Service, text="one")
    [(_, fields)] = await entries(transport.client, stream)
    # No key: not called by the outbox relay, so there is no delivery id.
    assert fields == {"payload": '{"text":"one"}', "sender": f"{__name__}:Service"}

    assert transport.unforward(greeting)
    assert not transport.unforward(greeting)
    await greeting.send(Service, text="two")
    assert await transport.client.xlen(stream) == 1


@pytest.mark.asyncio
async def test_forward_honours_the_sender(transport: RedisStreamTransport) -> None:
    """forward(signal, sender=X) publishes only X's sends."""
    greeting = Signal(Greeting, name="greeting")
    transport.forward(greeting, sender=Service)
    await greeting.send(object(), text="other")
    await greeting.send(Service, text="mine")
    rows = await entries(transport.client, transport.stream_name(greeting))
    assert [fields["payload"] for _, fields in rows] == ['{"text":"mine"}']


@pytest.mark.asyncio
async def test_a_consumer_does_not_forward_what_it_reads_again(
    transport: RedisStreamTransport,
) -> None:
    """A process that forwards and consumes a signal does not publish consumed sends again."""
    greeting = Signal(Greeting, name="greeting")
    transport.forward(greeting)
    seen: list[str] = []

    @greeting.connect
    async def remember(sender: Any, payload: Greeting) -> None:
        seen.append(payload.text)

    await greeting.send(Service, text="hello")  # Published, and received locally.
    subscriber = transport.consumer([greeting], block=0.2)
    async with running(subscriber):

        async def handled() -> bool:
            return subscriber.handled == 1

        await eventually(handled)
    assert seen == ["hello", "hello"]
    assert await transport.client.xlen(transport.stream_name(greeting)) == 1


# -- consuming ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_roundtrip_with_typed_payload_sender_and_message(
    transport: RedisStreamTransport,
) -> None:
    """A published send reaches the receivers as the typed payload, its sender class and entry."""
    greeting = Signal(Greeting, name="greeting")
    received: list[tuple[Any, Greeting, StreamMessage | None]] = []

    @greeting.connect(sender=Service)
    async def on_greeting(sender: Any, payload: Greeting) -> None:
        received.append((sender, payload, current_message()))

    entry_id = await transport.publish(greeting, Service, Greeting(text="hi"), key="k-1")
    await transport.publish(greeting, "someone else", Greeting(text="not for it"))
    subscriber = transport.consumer([greeting], consumer="c1", block=0.2)
    async with running(subscriber):

        async def both_handled() -> bool:
            return subscriber.handled == 2

        await eventually(both_handled)
    assert received == [
        (
            Service,
            Greeting(text="hi"),
            StreamMessage(
                id=entry_id,
                stream=f"{transport.stream_prefix}greeting",
                signal="greeting",
                deliveries=1,
                key="k-1",
                group=GROUP,
                consumer="c1",
            ),
        )
    ]
    assert received[0][2] is not None
    assert received[0][2].idempotency_key == "k-1"
    assert await pending(transport.client, transport.stream_name(greeting)) == 0


@pytest.mark.asyncio
async def test_a_model_signal_arrives_with_its_entity_rebuilt(
    transport: RedisStreamTransport,
) -> None:
    """post_save travels as JSON; the consumer hands receivers the entity class's instance."""
    received: list[Any] = []

    async def on_saved(sender: type[Note], payload: PostSave[Note]) -> None:
        received.append(payload.instance)

    with post_save.connected_to(on_saved, sender=Note):
        await transport.publish(post_save, Note, PostSave(instance=Note(1, "hi"), created=True))
        subscriber = transport.consumer([post_save], consumer="c1", block=0.2)
        async with running(subscriber):

            async def handled() -> bool:
                return subscriber.handled == 1

            await eventually(handled)
    assert received == [Note(1, "hi")]


@pytest.mark.asyncio
async def test_a_clients_own_resp3_decoding_client_works_and_stays_open(
    redis_server_url: str, stream_prefix: str
) -> None:
    """With client=..., RESP3 and decode_responses=True replies are read the same way."""
    client = aioredis.Redis.from_url(redis_server_url, protocol=3, decode_responses=True)  # pyright: ignore[reportUnknownMemberType]
    greeting = Signal(Greeting, name="greeting")
    seen: list[tuple[str, int]] = []

    @greeting.connect
    async def remember(sender: Any, payload: Greeting) -> None:
        message = current_message()
        assert message is not None
        seen.append((payload.text, message.deliveries))

    try:
        async with RedisStreamTransport(client=client, stream_prefix=stream_prefix) as transport:
            stream = transport.stream_name(greeting)
            await transport.publish(greeting, None, Greeting(text="read"))
            await client.xgroup_create(stream, GROUP, id="0")
            await client.xreadgroup(GROUP, "gone", {stream: ">"})  # Left pending by "gone".
            await transport.publish(greeting, None, Greeting(text="fresh"))
            subscriber = transport.consumer([greeting], block=0.1, claim_idle=0.1)
            async with running(subscriber):

                async def both() -> bool:
                    return subscriber.handled == 2

                await eventually(both)
        assert sorted(seen) == [("fresh", 1), ("read", 2)]
        assert await client.ping()  # Not closed: it is the caller's.
    finally:
        await client.delete(f"{stream_prefix}greeting")
        await client.aclose()


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
        message = current_message()
        assert message is not None
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
        message = current_message()
        assert message is not None
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
        "sender": f"{__name__}:Service",
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

    assert "text\n  Field required" in dead[invalid]["error"]
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
        message = current_message()
        assert message is not None
        seen.append((payload.text, message.deliveries))

    await client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    await transport.publish(greeting, None, Greeting(text="orphan"))
    poison = await transport.publish(greeting, None, Greeting(text="poison"))
    # A consumer that read both and died; it had read the second again twice (restarts).
    await client.xreadgroup(GROUP, "dead-consumer", {stream: ">"}, count=2)
    for _ in range(2):
        await client.xclaim(stream, GROUP, "dead-consumer", 0, [poison])
    await asyncio.sleep(0.15)
    subscriber = transport.consumer([greeting], block=0.1, claim_idle=0.1, max_deliveries=3)
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
        message = current_message()
        assert message is not None
        started.set()
        if message.consumer == "slow":
            await asyncio.sleep(0.5)  # Each one: more than twice claim_idle.
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


@pytest.mark.asyncio
async def test_stop_finishes_the_entry_in_hand(transport: RedisStreamTransport) -> None:
    """stop() during a receiver lets it finish and acknowledges the entry before run() returns."""
    greeting = Signal(Greeting, name="greeting")
    started = asyncio.Event()
    finished: list[str] = []

    @greeting.connect
    async def slow(sender: Any, payload: Greeting) -> None:
        started.set()
        await asyncio.sleep(0.3)
        finished.append(payload.text)

    await transport.publish(greeting, None, Greeting(text="a"))
    await transport.publish(greeting, None, Greeting(text="b"))
    subscriber = transport.consumer([greeting], block=0.1)
    task = asyncio.create_task(subscriber.run())
    await asyncio.wait_for(started.wait(), 5)
    subscriber.stop()
    await asyncio.wait_for(task, 5)
    assert finished == ["a"]
    assert subscriber.handled == 1
    # "b" was read with "a" and stays pending for this consumer's next run.
    assert await pending(transport.client, transport.stream_name(greeting)) == 1
    await asyncio.wait_for(asyncio.gather(subscriber.run(), _stop_when(subscriber, 2)), 5)
    assert finished == ["a", "b"]
    assert await pending(transport.client, transport.stream_name(greeting)) == 0


async def _stop_when(subscriber: Subscriber, handled: int) -> None:
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


async def consumer_names(transport: RedisStreamTransport, stream: str) -> dict[str, int]:
    """The consumers of the group on *stream*, with their pending counts."""
    consumers = await transport.client.xinfo_consumers(stream, GROUP)
    return {text(c["name"]): int(c["pending"]) for c in consumers}


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
    started = asyncio.Event()

    @greeting.connect
    async def slow(sender: Any, payload: Greeting) -> None:
        if payload.text == "slow":
            started.set()
            await asyncio.sleep(0.2)

    await transport.publish(greeting, None, Greeting(text="a"))
    done = transport.consumer([greeting, other], consumer="done", block=0.1)
    await asyncio.wait_for(asyncio.gather(done.run(), _stop_when(done, 1)), 5)
    assert "done" not in await consumer_names(transport, stream)
    assert "done" not in await consumer_names(transport, other_stream)

    # "slow" and "left" are read together; stopped during "slow", "left" stays pending.
    await transport.publish(greeting, None, Greeting(text="slow"))
    await transport.publish(greeting, None, Greeting(text="left"))
    busy = transport.consumer([greeting, other], consumer="busy", block=0.1)
    task = asyncio.create_task(busy.run())
    await asyncio.wait_for(started.wait(), 5)
    busy.stop()
    await asyncio.wait_for(task, 5)
    assert (await consumer_names(transport, stream))["busy"] == 1
    assert "busy" not in await consumer_names(transport, other_stream)  # Nothing pending there.
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


@pytest.mark.asyncio
async def test_redis_restart_mid_run_loses_nothing(
    redis_process: RedisProcess, stream_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The consumer backs off while Redis is down, reconnects, and every entry is handled once."""
    caplog.set_level(logging.WARNING, logger="aiosignals.redis")
    ping = Signal(_app.Ping, name="restart-ping")
    seen: list[int] = []

    @ping.connect
    async def slow(sender: Any, payload: _app.Ping) -> None:
        await asyncio.sleep(0.005)
        seen.append(payload.n)

    async with RedisStreamTransport(redis_process.url, stream_prefix=stream_prefix) as transport:
        stream = transport.stream_name(ping)
        for n in range(100):
            await transport.publish(ping, None, _app.Ping(n=n))
        # Small reads, so that Redis stops while entries are still to be read.
        subscriber = transport.consumer(
            [ping], count=10, block=0.2, reconnect_delay=0.05, max_reconnect_delay=0.4
        )
        async with running(subscriber):

            async def some_seen() -> bool:
                return len(seen) >= 20

            await eventually(some_seen)
            redis_process.stop()
            await asyncio.sleep(0.8)
            assert len(seen) < 100
            redis_process.start()
            for n in range(100, 110):
                await transport.publish(ping, None, _app.Ping(n=n))

            async def all_seen() -> bool:
                return set(seen) == set(range(110)) and await pending(transport.client, stream) == 0

            await eventually(all_seen)
        assert sorted(seen) == list(range(110))  # None lost, none twice.
    failures = [r for r in caplog.records if "Redis connection failed" in r.getMessage()]
    assert failures
    assert all(r.levelno == logging.WARNING for r in failures)


def require_password(server: RedisProcess) -> None:
    """Make *server* require the password ``secret`` (and know a user without stream rights)."""
    import redis

    with redis.Redis.from_url(server.url) as client:
        client.acl_setuser("pinger", enabled=True, passwords=["+pinger"], commands=["+ping"])
        client.config_set("requirepass", "secret")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("credentials", "error"),
    [
        (":wrong@", "AuthenticationError"),  # WRONGPASS
        ("", "AuthenticationError"),  # NOAUTH
        ("pinger:pinger@", "NoPermissionError"),  # NOPERM for the stream commands
    ],
)
async def test_refused_credentials_are_fatal_not_retried(
    redis_process: RedisProcess,
    stream_prefix: str,
    caplog: pytest.LogCaptureFixture,
    credentials: str,
    error: str,
) -> None:
    """
    A wrong password, a missing one or a user without the rights makes run() raise at once,
    saying so, instead of retrying forever as a connection failure.
    """
    caplog.set_level(logging.WARNING, logger="aiosignals.redis")
    require_password(redis_process)
    url = redis_process.url.replace("redis://", f"redis://{credentials}")
    greeting = Signal(Greeting, name="greeting")
    async with RedisStreamTransport(url, stream_prefix=stream_prefix) as transport:
        subscriber = transport.consumer([greeting], reconnect_delay=0.01, max_reconnect_delay=0.05)
        with pytest.raises(aioredis.RedisError) as caught:
            await asyncio.wait_for(subscriber.run(), 5)
        assert type(caught.value).__name__ == error
        assert any("not retried" in note for note in getattr(caught.value, "__notes__", []))
        assert not subscriber._running
    assert not [r for r in caplog.records if "connection failed" in r.getMessage()]


def test_cli_exits_non_zero_on_a_wrong_password(
    redis_process: RedisProcess, stream_prefix: str
) -> None:
    """``aiosignals consume`` with a wrong password fails at once with status 1 and says why."""
    require_password(redis_process)
    url = redis_process.url.replace("redis://", "redis://:wrong@")
    argv = ["consume", "--redis", url, "--app", "tests.transports._app:ping"]
    result = subprocess.run(
        [sys.executable, "-m", "aiosignals", *argv, "--prefix", stream_prefix],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "Redis refused this consumer" in result.stderr
    assert "AuthenticationError" in result.stderr
    assert "Traceback" not in result.stderr


# -- processes and the command -----------------------------------------------------------


async def start_consumer(
    url: str,
    prefix: str,
    name: str,
    *,
    delay: float = 0.0,
    claim_idle: float = 30.0,
    options: tuple[str, ...] = (),
) -> asyncio.subprocess.Process:
    """Run ``aiosignals consume`` on tests/transports/_app.py:ping in a new process."""
    env = {
        **os.environ,
        "AIOSIGNALS_TEST_RECORD_URL": url,
        "AIOSIGNALS_TEST_RECORD_KEY": f"{prefix}processed",
        "AIOSIGNALS_TEST_DELAY": str(delay),
    }
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aiosignals",
        "consume",
        "--redis",
        url,
        "--app",
        "tests.transports._app:ping",
        "--prefix",
        prefix,
        "--consumer",
        name,
        "--claim-idle",
        str(claim_idle),
        *options,
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def stop_consumer(
    process: asyncio.subprocess.Process, signum: int = os_signal.SIGTERM
) -> str:
    """Send *signum* to *process*; assert it exits 0 and return its stderr."""
    process.send_signal(signum)
    _, stderr = await asyncio.wait_for(process.communicate(), 10)
    text = stderr.decode()
    assert process.returncode == 0, text
    return text


async def records(client: aioredis.Redis, prefix: str) -> list[tuple[str, int, int]]:
    """(consumer, n, deliveries) for each entry the consumer processes handled."""
    rows = await _app.reply(client.lrange(f"{prefix}processed", 0, -1))
    result = []
    for row in rows:
        consumer, n, deliveries = text(row).split("|")
        result.append((consumer, int(n), int(deliveries)))
    return result


async def wait_for_consumers(
    transport: RedisStreamTransport, names: set[str], processes: list[asyncio.subprocess.Process]
) -> None:
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


@pytest.mark.asyncio
async def test_two_consumer_processes_share_events_none_lost_none_twice(
    transport: RedisStreamTransport, redis_server_url: str, stream_prefix: str
) -> None:
    """
    1,000 events shared by two ``aiosignals consume`` processes: each handled exactly once.

    One acknowledges each entry (``--no-batch-ack``), the other each batch (the default);
    both stop cleanly (exit status 0), one on SIGTERM, the other on SIGINT.
    """
    processes = [
        await start_consumer(redis_server_url, stream_prefix, "a", options=("--no-batch-ack",)),
        await start_consumer(redis_server_url, stream_prefix, "b"),
    ]
    try:
        await wait_for_consumers(transport, {"a", "b"}, processes)
        async with transport.client.pipeline(transaction=False) as pipe:
            for n in range(1000):
                pipe.xadd(
                    transport.stream_name(_app.ping),
                    {"payload": _app.Ping(n=n).model_dump_json(), "sender": ""},
                )
            await pipe.execute()

        async def all_handled() -> bool:
            return await _app.reply(transport.client.llen(f"{stream_prefix}processed")) >= 1000

        await eventually(all_handled, timeout=20)
        await asyncio.sleep(0.2)  # A duplicate would show up now.
    finally:
        try:
            outputs = [
                await stop_consumer(process, signum)
                for process, signum in zip(
                    processes, (os_signal.SIGTERM, os_signal.SIGINT), strict=True
                )
            ]
        finally:
            for process in processes:  # One that failed to stop must not outlive the test.
                if process.returncode is None:
                    process.kill()
                    await process.wait()
    handled = await records(transport.client, stream_prefix)
    assert sorted(n for _, n, _ in handled) == list(range(1000))
    assert {consumer for consumer, _, _ in handled} == {"a", "b"}
    assert await pending(transport.client, transport.stream_name(_app.ping)) == 0
    assert all("aiosignals consume: stopped; " in output for output in outputs)


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


def test_cli_rejects_a_bad_app_with_exit_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    """A missing attribute, a module without signals, or a non-signal is a clear error."""
    base = ["consume", "--redis", "redis://127.0.0.1:1/0", "--app"]
    assert cli_main([*base, "tests.transports._app:nothing"]) == 2
    assert "has no attribute 'nothing'" in capsys.readouterr().err
    assert cli_main([*base, "json"]) == 2
    assert "no named signals found" in capsys.readouterr().err
    assert cli_main([*base, "tests.transports._app:Ping"]) == 2
    assert "expected a Signal" in capsys.readouterr().err
    assert cli_main([*base, "no_such_module_xyz"]) == 2
    assert "No module named 'no_such_module_xyz'" in capsys.readouterr().err


def test_load_signals_takes_a_signal_a_list_or_a_module() -> None:
    """--app names a signal, a list of signals, or a module whose named signals all count."""
    assert load_signals("tests.transports._app:ping") == [_app.ping]
    assert load_signals("tests.transports._app") == [_app.ping]
    assert load_signals(f"{__name__}:SIGNALS") == [_app.ping]


SIGNALS = [_app.ping, _app.ping]


# -- payload data (#11) ------------------------------------------------------------------


class Measured(Event):
    value: float
    series: tuple[float, ...]
    raw: bytes


@dataclasses.dataclass
class Part:
    data: bytes


@dataclasses.dataclass
class Sample:
    id: int
    value: float
    data: bytes
    parts: list[Part]


class ModelSample(BaseModel):
    """A pydantic entity travels as its own JSON: base64 bytes are its config's choice."""

    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    id: int
    values: tuple[float, ...]
    data: bytes


@pytest.mark.asyncio
async def test_floats_nan_and_infinities_and_binary_bytes_round_trip_through_the_stream(
    transport: RedisStreamTransport,
) -> None:
    """NaN, infinities and non-UTF-8 bytes, in an event and in an entity, arrive exactly."""
    import math

    measured = Signal(Measured, name="measured")
    received: list[Any] = []

    async def on_measured(sender: Any, payload: Measured) -> None:
        received.append(payload)

    async def on_saved(sender: type[Any], payload: PostSave[Any]) -> None:
        received.append(payload.instance)

    with (
        measured.connected_to(on_measured),
        post_save.connected_to(on_saved, sender=Sample),
        post_save.connected_to(on_saved, sender=ModelSample),
    ):
        await transport.publish(
            measured,
            None,
            Measured(value=math.nan, series=(math.inf, -math.inf), raw=b"\xff\x00\xfe"),
        )
        sample = Sample(1, -math.inf, bytes(range(256))[::-1], [Part(b"\xfe\xff")])
        await transport.publish(post_save, Sample, PostSave(instance=sample, created=True))
        model = ModelSample(id=2, values=(math.inf, -math.inf), data=b"\x80\xff")
        await transport.publish(post_save, ModelSample, PostSave(instance=model, created=True))
        subscriber = transport.consumer([measured, post_save], consumer="c1", block=0.2)
        async with running(subscriber):

            async def handled() -> bool:
                return subscriber.handled == 3

            await eventually(handled)
    assert len(received) == 3
    event = next(item for item in received if isinstance(item, Measured))
    assert math.isnan(event.value)
    assert event.series == (math.inf, -math.inf)
    assert event.raw == b"\xff\x00\xfe"
    assert sample in received
    assert model in received
    assert await transport.dead_letters() == []


@pytest.mark.asyncio
async def test_forwarding_through_the_outbox_keys_entries_by_database_and_delivery(
    transport: RedisStreamTransport, tmp_path: Path
) -> None:
    """An entry forwarded by the outbox relay has the key ``outbox:<database name>:<row id>``."""
    from aiosignals.outbox import OutboxRelay
    from aiosignals.repository.sqlalchemy import Database

    greeting = Signal(Greeting, name="greeting")
    transport.forward(greeting)
    try:
        async with Database(f"sqlite+aiosqlite:///{tmp_path / 'shop.db'}", name="shop") as db:
            await OutboxRelay.create_table(db)
            async with db.transaction():
                await greeting.send(Service, text="stored first")
            assert await entries(transport.client, transport.stream_name(greeting)) == []
            assert await OutboxRelay(db).run_once() == 1
    finally:
        transport.unforward(greeting)
    [(_, fields)] = await entries(transport.client, transport.stream_name(greeting))
    assert fields["key"].startswith("outbox:shop:")
    assert int(fields["key"].rpartition(":")[2]) >= 1


class Anything(Event):
    thing: Any


@pytest.mark.asyncio
async def test_a_payload_with_no_json_form_is_refused_at_publish_naming_signal_and_stream(
    transport: RedisStreamTransport,
) -> None:
    """publish() of a value with no JSON form raises a TypeError naming signal and stream."""
    anything = Signal(Anything, name="anything")
    with pytest.raises(TypeError, match=r"signal 'anything' to the stream '.*anything'"):
        await transport.publish(anything, None, Anything(thing=object()))
    assert await entries(transport.client, transport.stream_name(anything)) == []
