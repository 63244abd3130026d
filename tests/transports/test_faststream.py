"""
FastStreamTransport: one behaviour suite against a real RabbitMQ and a real NATS JetStream.

Every test that takes ``broker_url`` runs on both brokers. Consumer processes record what
they handled in Redis (tests/transports/_app.py), so the fault tests need Redis too.
"""

from __future__ import annotations

import asyncio
import signal as os_signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from faststream import Context

from aiosignals import Event, Signal
from aiosignals._cli import main as cli_main
from aiosignals.transports import (
    FastStreamTransport,
    broker_from_url,
)
from tests.transports import _app
from tests.transports._processes import records, start_consume, stop_consumer
from tests.transports._support import (
    SERVICE_LABEL,
    Greeting,
    Service,
    eventually,
    in_hand,
    remove_topology,
    running,
)

if TYPE_CHECKING:
    from tests._servers import NatsProcess, RabbitMQProcess

ROOT = Path(__file__).resolve().parents[2]

# How a plain FastStream handler asks for the message itself.
Message = Annotated[Any, Context("message")]

BROKERS = [
    pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
    pytest.param("nats", marks=pytest.mark.nats),
]


class Other(Event):
    n: int


@pytest.fixture(params=BROKERS)
def broker_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
def prefix() -> str:
    """A prefix of one test's own: its exchange, queues or JetStream stream are its own."""
    return f"t{uuid.uuid4().hex[:10]}."


@pytest_asyncio.fixture
async def transport(broker_url: str, prefix: str) -> AsyncIterator[FastStreamTransport]:
    async with FastStreamTransport.from_url(broker_url, prefix=prefix) as transport:
        try:
            yield transport
        finally:
            await remove_topology(transport, prefix)


async def dead_letters(
    transport: FastStreamTransport, prefix: str, count: int
) -> list[tuple[bytes, dict[str, Any]]]:
    """Read *count* messages of the dead-letter stream with a plain FastStream subscriber."""
    got: list[tuple[bytes, dict[str, Any]]] = []
    done = asyncio.Event()

    async def collect(message: Message) -> None:
        got.append((message.body, dict(message.headers)))
        await message.ack()
        if len(got) >= count:
            done.set()

    broker = transport.broker
    if transport.adapter.kind == "RabbitMQ":
        from faststream.rabbit import QueueType, RabbitQueue

        subscriber = broker.subscriber(
            RabbitQueue(f"{prefix}dead.dead", queue_type=QueueType.QUORUM, durable=True),
            persistent=False,
        )
    else:
        from faststream.nats import JStream, PullSub

        subscriber = broker.subscriber(
            f"{prefix}dead",
            stream=JStream(prefix.rstrip("."), declare=False),
            durable="reader",
            pull_sub=PullSub(batch_size=10, timeout=0.5),
            persistent=False,
        )

    subscriber(collect)
    await subscriber.start()
    try:
        await asyncio.wait_for(done.wait(), 15)
    finally:
        await subscriber.stop()
    return got


# -- publishing and consuming --------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_failed_send_is_redelivered_with_the_same_idempotency_key(
    transport: FastStreamTransport,
) -> None:
    """A receiver that fails once gets the message again: delivery 2, the same key, then acked."""
    greeting = Signal(Greeting, name="greeting")
    deliveries: list[tuple[str, int]] = []

    @greeting.connect
    async def flaky(sender: Any, payload: Greeting) -> None:
        message = in_hand()
        deliveries.append((message.idempotency_key, message.deliveries))
        if message.deliveries == 1:
            raise RuntimeError("first time")

    message_id = await transport.publish(greeting, None, Greeting(text="x"))
    consumer = transport.consumer([greeting], retry_delay=0.01)
    async with running(consumer):

        async def handled() -> bool:
            return consumer.handled == 1

        await eventually(handled)
    key = f"{transport.stream_name(greeting)}/{message_id}"
    assert deliveries == [(key, 1), (key, 2)]
    assert (consumer.failed, consumer.dead) == (1, 0)


@pytest.mark.asyncio
async def test_poison_message_is_dead_lettered_after_max_deliveries_with_the_error(
    transport: FastStreamTransport, prefix: str
) -> None:
    """A send that always fails runs max_deliveries times, then goes to the dead letters."""
    greeting = Signal(Greeting, name="greeting")
    calls: list[int] = []

    @greeting.connect
    async def poison(sender: Any, payload: Greeting) -> None:
        calls.append(1)
        raise ValueError("poison")

    message_id = await transport.publish(greeting, Service, Greeting(text="x"), key="k")
    consumer = transport.consumer([greeting], max_deliveries=3, retry_delay=0.01)
    async with running(consumer):

        async def buried() -> bool:
            return consumer.dead == 1

        await eventually(buried)
    assert len(calls) == 3
    [(body, headers)] = await dead_letters(transport, prefix, 1)
    assert body == b'{"text":"x"}'
    assert {k: v for k, v in headers.items() if k.startswith("aiosignals-")} == {
        "aiosignals-id": message_id,
        "aiosignals-sender": SERVICE_LABEL,
        "aiosignals-key": "k",
        "aiosignals-error": "ValueError: poison (after 3 deliveries)",
        "aiosignals-stream": transport.stream_name(greeting),
        "aiosignals-deliveries": "3",
        "aiosignals-group": "aiosignals",
        "aiosignals-consumer": consumer.name,
    }


@pytest.mark.asyncio
async def test_a_payload_that_does_not_validate_is_dead_lettered_at_once(
    transport: FastStreamTransport, prefix: str
) -> None:
    """A payload that does not fit the consumer's signal is not retried."""
    await transport.publish(Signal(Greeting, name="x"), None, Greeting(text="t"))
    consumer = transport.consumer([Signal(Other, name="x")])
    async with running(consumer):

        async def buried() -> bool:
            return consumer.dead == 1

        await eventually(buried)
    [(_, headers)] = await dead_letters(transport, prefix, 1)
    assert headers["aiosignals-error"].startswith("payload does not validate as Other")
    assert consumer.failed == 0


@pytest.mark.asyncio
async def test_a_live_consumer_keeps_its_message_however_long_its_receivers_take(
    transport: FastStreamTransport,
) -> None:
    """A receiver running past claim_idle is not redelivered: the consumer keeps it alive."""
    greeting = Signal(Greeting, name="greeting")
    deliveries: list[int] = []

    @greeting.connect
    async def slow(sender: Any, payload: Greeting) -> None:
        message = in_hand()
        deliveries.append(message.deliveries)
        await asyncio.sleep(1.5)

    await transport.publish(greeting, None, Greeting(text="slow"))
    consumer = transport.consumer([greeting], claim_idle=0.6)
    async with running(consumer):

        async def handled() -> bool:
            return consumer.handled == 1

        await eventually(handled)
        await asyncio.sleep(0.7)  # A redelivery after the ack_wait would show up now.
    assert deliveries == [1]


@pytest.mark.asyncio
async def test_each_group_gets_every_message(transport: FastStreamTransport) -> None:
    """Two groups consume the same signal: each handles every message once."""
    greeting = Signal(Greeting, name="greeting")
    seen: list[tuple[str, str]] = []

    @greeting.connect
    async def note(sender: Any, payload: Greeting) -> None:
        message = in_hand()
        seen.append((message.group, payload.text))

    audit = transport.consumer([greeting], group="audit")
    main = transport.consumer([greeting])
    async with running(audit), running(main):
        # A group's queue or durable consumer exists once its consumer runs.
        await asyncio.sleep(0.5)
        for n in range(5):
            await transport.publish(greeting, None, Greeting(text=str(n)))

        async def all_handled() -> bool:
            return len(seen) == 10

        await eventually(all_handled)
    assert sorted(seen) == sorted((g, str(n)) for g in ("aiosignals", "audit") for n in range(5))


@pytest.mark.asyncio
async def test_consumers_started_together_leave_nothing_consuming_once_stopped(
    transport: FastStreamTransport,
) -> None:
    """Two consumers started at once on one broker: once stopped, neither takes messages."""
    greeting = Signal(Greeting, name="greeting")
    first, second = transport.consumer([greeting]), transport.consumer([greeting])
    async with running(first), running(second):

        async def both_subscribed() -> bool:
            return first.subscribed and second.subscribed

        await eventually(both_subscribed)
    for n in range(3):
        await transport.publish(greeting, None, Greeting(text=str(n)))
    third = transport.consumer([greeting])
    async with running(third):

        async def handled() -> bool:
            return third.handled == 3

        await eventually(handled)
    assert (first.handled, second.handled) == (0, 0)


@pytest.mark.asyncio
async def test_forward_publishes_through_the_outbox_with_the_delivery_id_as_key(
    transport: FastStreamTransport, tmp_path: Path
) -> None:
    """A send in a transaction is published by the outbox relay after commit, keyed by its row."""
    from aiosignals.outbox import OutboxRelay
    from aiosignals.repository.sqlalchemy import Database

    greeting = Signal(Greeting, name="greeting")
    transport.forward(greeting)
    keys: list[str | None] = []
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}") as db:
        await OutboxRelay.create_table(db)
        async with db.transaction():
            await greeting.send(Service, text="after commit")
        transport.unforward(greeting)  # The consumer below must not forward again.

        @greeting.connect
        async def remember(sender: Any, payload: Greeting) -> None:
            message = in_hand()
            keys.append(message.key)

        consumer = transport.consumer([greeting])
        async with running(consumer):
            await asyncio.sleep(0.2)
            assert keys == []  # Nothing published before the relay ran.
            transport.forward(greeting)
            assert await OutboxRelay(db).run_once() == 1

            async def handled() -> bool:
                return consumer.handled == 1

            await eventually(handled)
    [key] = keys
    assert key is not None
    assert key.startswith("outbox:")


# -- processes, faults and restarts ------------------------------------------------------


async def start_consumer(
    broker_url: str,
    prefix: str,
    name: str,
    record_url: str,
    *,
    delay: float = 0.0,
    hang_after: int | None = None,
) -> asyncio.subprocess.Process:
    """Run ``aiosignals consume --broker`` in a new process, recording in *record_url*."""
    options = ("--claim-idle", "1", "--count", "5")
    return await start_consume(
        ("--broker", broker_url),
        record_url,
        prefix,
        name,
        *options,
        delay=delay,
        hang_after=hang_after,
    )


@pytest.mark.asyncio
async def test_every_event_is_handled_when_one_of_two_consumer_processes_is_killed(
    transport: FastStreamTransport, prefix: str, redis_server_url: str, broker_url: str
) -> None:
    """
    Two ``aiosignals consume --broker`` processes, one SIGKILLed with a backlog in hand.

    Every event is handled at least once; what the killed one held is handled again by the
    other (a later delivery); the survivor stops cleanly on SIGTERM.
    """
    client = aioredis.Redis.from_url(redis_server_url)
    # The doomed one hangs from its 21st message on: when it is killed it surely holds one.
    processes = [
        await start_consumer(
            broker_url, prefix, name, redis_server_url, delay=0.02, hang_after=hang_after
        )
        for name, hang_after in (("doomed", 20), ("survivor", None))
    ]
    try:
        # Events until both consumers run (each takes its time to start), then 200 more.
        published = 0
        deadline = time.monotonic() + 60
        while {c for c, _, _ in await records(client, prefix)} != {"doomed", "survivor"}:
            assert time.monotonic() < deadline, "the consumers did not start"
            for process in processes:
                assert process.returncode is None, (await process.communicate())[1].decode()
            for n in range(published, published + 4):
                await transport.publish(_app.ping, None, _app.Ping(n=n))
            published += 4
            await asyncio.sleep(0.1)
        total = published + 200
        for n in range(published, total):
            await transport.publish(_app.ping, None, _app.Ping(n=n))

        async def holding() -> bool:
            """The doomed consumer hangs on a message: it holds it, unacknowledged."""
            return bool(await _app.reply(client.llen(f"{prefix}processed:hung")))

        await eventually(holding, timeout=30)
        processes[0].kill()
        await processes[0].wait()
        hung = await _app.reply(client.lrange(f"{prefix}processed:hung", 0, -1))
        held = {
            int((entry.decode() if isinstance(entry, bytes) else entry).split("|")[1])
            for entry in hung
        }

        async def all_handled() -> bool:
            return {n for _, n, _ in await records(client, prefix)} == set(range(total))

        await eventually(all_handled, timeout=30)
        processes[1].send_signal(os_signal.SIGTERM)
        _, stderr = await asyncio.wait_for(processes[1].communicate(), 15)
        assert processes[1].returncode == 0, stderr.decode()
        assert "aiosignals consume: stopped; " in stderr.decode()
        handled = await records(client, prefix)
        # What the killed one held was delivered again, to the survivor.
        assert {("survivor", n) for n in held} <= {
            (consumer, n) for consumer, n, deliveries in handled if deliveries > 1
        }
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
        await client.delete(f"{prefix}processed", f"{prefix}processed:hung")
        await client.aclose()


@pytest.mark.nats
@pytest.mark.asyncio
async def test_a_nats_server_restart_loses_nothing(nats_process: NatsProcess) -> None:
    """The consumer rides over a stop and restart of nats-server; nothing is lost."""
    greeting = Signal(Greeting, name="greeting")
    seen: set[str] = set()

    @greeting.connect
    async def note(sender: Any, payload: Greeting) -> None:
        seen.add(payload.text)

    async def publish(text: str) -> None:
        deadline = time.monotonic() + 20
        while True:
            try:
                await restartable.publish(greeting, None, Greeting(text=text))
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)  # Reconnecting: try again.
            else:
                return

    from faststream.nats import NatsBroker

    broker = NatsBroker(nats_process.url, reconnect_time_wait=1, max_reconnect_attempts=-1)
    async with FastStreamTransport(broker) as restartable:
        consumer = restartable.consumer([greeting])
        async with running(consumer):
            for n in range(5):
                await publish(f"before {n}")

            async def first_half() -> bool:
                return len(seen) == 5

            await eventually(first_half)
            nats_process.stop()
            nats_process.start()
            for n in range(5):
                await publish(f"after {n}")

            async def all_handled() -> bool:
                return len(seen) == 10

            await eventually(all_handled, timeout=30)
        await broker.stop()


@pytest.mark.rabbitmq
@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_rabbitmq_restart_loses_nothing(rabbitmq_process: RabbitMQProcess) -> None:
    """The consumer rides over a stop and restart of rabbitmq-server; nothing is lost."""
    greeting = Signal(Greeting, name="greeting")
    seen: set[str] = set()

    @greeting.connect
    async def note(sender: Any, payload: Greeting) -> None:
        seen.add(payload.text)

    async def publish(text: str) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                await restartable.publish(greeting, None, Greeting(text=text))
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)  # Reconnecting: try again.
            else:
                return

    from faststream.rabbit import RabbitBroker

    broker = RabbitBroker(rabbitmq_process.url)
    async with FastStreamTransport(broker) as restartable:
        consumer = restartable.consumer([greeting])
        async with running(consumer):
            for n in range(5):
                await publish(f"before {n}")

            async def first_half() -> bool:
                return len(seen) == 5

            await eventually(first_half)
            rabbitmq_process.stop()
            rabbitmq_process.start()
            for n in range(5):
                await publish(f"after {n}")

            async def all_handled() -> bool:
                return len(seen) == 10

            await eventually(all_handled, timeout=30)
        await broker.stop()


# -- choosing the broker, and bad input ----------------------------------------------------


def test_broker_from_url_chooses_the_broker_by_scheme() -> None:
    """amqp, nats, redis and kafka URLs give FastStream's brokers; another scheme is refused."""
    from faststream.kafka import KafkaBroker
    from faststream.nats import NatsBroker
    from faststream.rabbit import RabbitBroker
    from faststream.redis import RedisBroker

    assert isinstance(broker_from_url("amqp://guest:guest@127.0.0.1:5672/"), RabbitBroker)
    assert isinstance(broker_from_url("nats://127.0.0.1:4222"), NatsBroker)
    assert isinstance(broker_from_url("redis://127.0.0.1:6379/0"), RedisBroker)
    assert isinstance(broker_from_url("kafka://127.0.0.1:9092"), KafkaBroker)
    with pytest.raises(ValueError, match="expected an amqp://"):
        broker_from_url("http://127.0.0.1")


def test_bad_arguments_are_clear_errors() -> None:
    """Not a FastStream broker, a NATS prefix without a dot, a signal named dead: refused."""
    from faststream.nats import NatsBroker

    with pytest.raises(TypeError, match="not a FastStream"):
        FastStreamTransport(object())
    with pytest.raises(ValueError, match=r"must end with '\.'"):
        FastStreamTransport(NatsBroker(), prefix="aiosignals:")
    transport = FastStreamTransport(NatsBroker())
    with pytest.raises(ValueError, match="dead-letter stream"):
        transport.consumer(["dead"])
    with pytest.raises(ValueError, match="has no name"):
        transport.consumer([Signal(Greeting)])
    with pytest.raises(ValueError, match="at least 1"):
        transport.consumer(["greeting"], max_deliveries=0)


def test_cli_consume_refuses_a_bad_broker_url_and_batch_ack(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--broker with an unknown scheme, or with --batch-ack, exits 2 with the reason."""
    base = ["consume", "--app", "tests.transports._app:ping", "--broker"]
    assert cli_main([*base, "http://127.0.0.1:1"]) == 2
    assert "expected an amqp://" in capsys.readouterr().err
    assert cli_main([*base, "nats://127.0.0.1:1", "--batch-ack"]) == 2
    assert "--batch-ack works with --redis only" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["consume", "--app", "tests.transports._app:ping"])
    assert "one of the arguments --redis --broker is required" in capsys.readouterr().err


@pytest.mark.asyncio
async def test_cli_consume_with_a_broker_takes_no_batch_ack_and_stops_cleanly(
    broker_url: str, prefix: str, redis_server_url: str, transport: FastStreamTransport
) -> None:
    """--no-batch-ack with --broker is what the broker does anyway: it runs, SIGTERM stops it."""
    process = await start_consume(
        ("--broker", broker_url), redis_server_url, prefix, "c1", "--no-batch-ack"
    )
    try:
        assert process.stderr is not None
        first = await asyncio.wait_for(process.stderr.readline(), 30)
        assert b"SIGINT or SIGTERM stops" in first, first
        assert "stopped; 0 handled" in await stop_consumer(process)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


# -- Kafka (FastStream's in-memory test broker) and Redis ---------------------------------


@pytest.mark.asyncio
async def test_kafka_acknowledges_after_receivers_and_refuses_to_drop_a_failed_message() -> None:
    """
    On Kafka (TestKafkaBroker: no Kafka server here) a send is handled and committed; a
    failed one makes run() raise UnsupportedByBroker, since Kafka has no per-message retry.
    """
    from faststream.kafka import KafkaBroker, TestKafkaBroker

    from aiosignals.exceptions import UnsupportedByBroker

    greeting = Signal(Greeting, name="greeting")
    seen: list[tuple[str, str | None]] = []

    @greeting.connect
    async def note(sender: Any, payload: Greeting) -> None:
        message = in_hand()
        seen.append((payload.text, message.key))
        if payload.text == "bad":
            raise RuntimeError("bad")

    broker = KafkaBroker("127.0.0.1:9092")
    transport = FastStreamTransport(broker)
    consumer = transport.consumer([greeting], consumer="k")
    async with TestKafkaBroker(broker):
        task = asyncio.create_task(consumer.run())

        async def subscribed() -> bool:
            return consumer.subscribed

        await eventually(subscribed)
        await transport.publish(greeting, None, Greeting(text="hi"), key="k-1")
        assert (consumer.handled, seen) == (1, [("hi", "k-1")])
        await transport.publish(greeting, None, Greeting(text="bad"))
        with pytest.raises(UnsupportedByBroker, match="Kafka has no per-message"):
            await asyncio.wait_for(task, 10)
    assert (consumer.handled, consumer.failed, consumer.dead) == (1, 1, 0)


@pytest.mark.redis
@pytest.mark.asyncio
async def test_redis_through_faststream_redelivers_then_dead_letters(
    redis_server_url: str, prefix: str
) -> None:
    """On Redis, a failing send is delivered again with its count, then dead-lettered."""
    greeting = Signal(Greeting, name="greeting")
    deliveries: list[tuple[str, int]] = []

    @greeting.connect
    async def poison(sender: Any, payload: Greeting) -> None:
        message = in_hand()
        deliveries.append((message.idempotency_key, message.deliveries))
        raise RuntimeError("poison")

    client = aioredis.Redis.from_url(redis_server_url)
    try:
        async with FastStreamTransport.from_url(redis_server_url, prefix=prefix) as transport:
            await transport.publish(greeting, None, Greeting(text="x"), key="k")
            consumer = transport.consumer([greeting], max_deliveries=3, retry_delay=0.01)
            async with running(consumer):

                async def buried() -> bool:
                    return consumer.dead == 1

                await eventually(buried)
        assert deliveries == [("k", 1), ("k", 2), ("k", 3)]
        rows = cast("list[tuple[bytes, dict[bytes, bytes]]]", await client.xrange(f"{prefix}dead"))
        [(_, fields)] = rows
        assert b"RuntimeError: poison (after 3 deliveries)" in b"".join(fields.values())
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
