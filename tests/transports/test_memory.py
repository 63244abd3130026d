"""The in-memory transport: the protocol's semantics in one process, on asyncio and trio."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from aiosignals import Event, Signal
from aiosignals.transports import (
    Consumer,
    FastStreamTransport,
    MemoryConsumer,
    MemoryTransport,
    RedisStreamTransport,
    Transport,
)
from tests.transports._support import SERVICE_LABEL, Greeting, Service, eventually, in_hand, running

pytestmark = pytest.mark.anyio


def new_transport() -> MemoryTransport:
    """A transport closed when the test ends (its queues warn if left open)."""
    transport = MemoryTransport()
    _opened.append(transport)
    return transport


_opened: list[MemoryTransport] = []


@pytest.fixture(autouse=True)
def _close_transports() -> Iterator[None]:
    yield
    while _opened:
        _opened.pop().close()


def test_every_transport_satisfies_the_protocol() -> None:
    """Memory, Redis and FastStream transports are Transports, their consumers Consumers."""
    from faststream.nats import NatsBroker

    signal = Signal(Greeting, name="greeting")
    with MemoryTransport() as memory:
        # Nothing connects: consumer() only builds the consumer.
        transports: list[Transport] = [
            memory,
            RedisStreamTransport("redis://127.0.0.1:1/0"),
            FastStreamTransport(NatsBroker("nats://127.0.0.1:1")),
        ]
        consumers: list[Consumer] = [t.consumer(signal, max_deliveries=2) for t in transports]
    assert [consumer.handled for consumer in consumers] == [0, 0, 0]


async def test_a_failed_send_is_redelivered_with_the_same_idempotency_key() -> None:
    """A receiver that fails once gets the message again, delivery 2, same key."""
    transport = new_transport()
    greeting = Signal(Greeting, name="greeting")
    keys: list[tuple[str, int]] = []

    @greeting.connect
    async def flaky(sender: Any, payload: Greeting) -> None:
        message = in_hand()
        keys.append((message.idempotency_key, message.deliveries))
        if message.deliveries == 1:
            raise RuntimeError("first time")

    await transport.publish(greeting, None, Greeting(text="x"))
    consumer = transport.consumer([greeting])
    async with running(consumer):
        await eventually(lambda: consumer.handled == 1)
    assert keys == [("greeting/1", 1), ("greeting/1", 2)]
    assert consumer.failed == 1
    assert transport.dead_letters() == []


async def test_poison_message_is_dead_lettered_after_max_deliveries_with_the_error() -> None:
    """A send that always fails runs max_deliveries times, then lands in the dead letters."""
    transport = new_transport()
    greeting = Signal(Greeting, name="greeting")
    calls: list[int] = []

    @greeting.connect
    async def poison(sender: Any, payload: Greeting) -> None:
        calls.append(1)
        raise ValueError("bad")

    await transport.publish(greeting, Service, Greeting(text="x"), key="k")
    consumer = transport.consumer([greeting], max_deliveries=3)
    async with running(consumer):
        await eventually(lambda: consumer.dead == 1)
    assert len(calls) == 3
    [(_, fields)] = transport.dead_letters()
    assert fields == {
        "payload": '{"text":"x"}',
        "sender": SERVICE_LABEL,
        "key": "k",
        "error": "ValueError: bad (after 3 deliveries)",
        "stream": "greeting",
        "deliveries": "3",
        "group": "aiosignals",
        "consumer": "memory",
    }


class Other(Event):
    n: int


async def test_a_payload_that_does_not_validate_is_dead_lettered_at_once() -> None:
    """A message whose payload does not fit the consumer's signal is not retried."""
    transport = new_transport()
    await transport.publish(Signal(Greeting, name="x"), None, Greeting(text="t"))
    consumer = transport.consumer([Signal(Other, name="x")])
    async with running(consumer):
        await eventually(lambda: consumer.dead == 1)
    [(_, fields)] = transport.dead_letters()
    assert fields["error"].startswith("payload does not validate as Other")
    assert consumer.failed == 0


class Secret(Event):
    token: str


async def test_an_invalid_payloads_error_names_fields_not_their_values(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The dead-letter error and the logs of an invalid payload never quote its values."""
    transport = new_transport()
    await transport.publish(Signal(Secret, name="x"), None, Secret(token="s3cret-value"))
    consumer = transport.consumer([Signal(Other, name="x")])
    async with running(consumer):
        await eventually(lambda: consumer.dead == 1)
    [(_, fields)] = transport.dead_letters()
    assert fields["error"].startswith("payload does not validate as Other: n: Field required")
    assert "s3cret" not in fields["error"]
    assert "s3cret" not in caplog.text


async def test_consumers_of_a_group_share_and_each_group_gets_every_message() -> None:
    """Two consumers of one group split the messages; another group gets them all."""
    transport = new_transport()
    greeting = Signal(Greeting, name="greeting")
    seen: dict[str, list[str]] = {}

    @greeting.connect
    async def note(sender: Any, payload: Greeting) -> None:
        message = in_hand()
        seen.setdefault(message.group, []).append(payload.text)
        await anyio.lowlevel.checkpoint()  # The other consumer of the group takes the next.

    consumers = [
        transport.consumer([greeting], consumer="a"),
        transport.consumer([greeting], consumer="b"),
        transport.consumer([greeting], group="audit"),
    ]
    async with anyio.create_task_group() as tasks:
        for consumer in consumers:
            tasks.start_soon(consumer.run)
        await anyio.wait_all_tasks_blocked()
        for n in range(20):
            await transport.publish(greeting, None, Greeting(text=str(n)))
        await eventually(lambda: len(seen.get("aiosignals", [])) == 20 and len(seen["audit"]) == 20)
        for consumer in consumers:
            consumer.stop()
    assert sorted(seen["aiosignals"], key=int) == [str(n) for n in range(20)]
    assert consumers[0].handled > 0
    assert consumers[1].handled > 0


async def test_the_message_in_hand_of_a_cancelled_consumer_goes_to_another() -> None:
    """Cancelling a consumer mid-send puts the message back; the next consumer gets delivery 2."""
    transport = new_transport()
    greeting = Signal(Greeting, name="greeting")
    started = anyio.Event()
    deliveries: list[tuple[str, int]] = []

    @greeting.connect
    async def slow(sender: Any, payload: Greeting) -> None:
        message = in_hand()
        deliveries.append((message.consumer, message.deliveries))
        if message.consumer == "doomed":
            started.set()
            await anyio.sleep_forever()

    await transport.publish(greeting, None, Greeting(text="x"))
    doomed = transport.consumer([greeting], consumer="doomed")
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(doomed.run)
        await started.wait()
        tasks.cancel_scope.cancel()
    assert transport.pending(greeting) == 1
    rescuer = transport.consumer([greeting], consumer="rescuer")
    async with running(rescuer):
        await eventually(lambda: rescuer.handled == 1)
    assert deliveries == [("doomed", 1), ("rescuer", 2)]


async def test_forward_publishes_sends_and_a_consumer_does_not_publish_them_again() -> None:
    """forward() publishes each send once; what a consumer reads is not forwarded again."""
    transport = new_transport()
    greeting = Signal(Greeting, name="greeting")
    transport.forward(greeting)
    transport.forward(greeting)  # Already forwarded: nothing more is connected.
    seen: list[str] = []

    @greeting.connect
    async def remember(sender: Any, payload: Greeting) -> None:
        seen.append(payload.text)

    await greeting.send(Service, text="hello")
    assert transport.pending(greeting) == 1
    consumer = transport.consumer([greeting])
    async with running(consumer):
        await eventually(lambda: consumer.handled == 1)
    assert seen == ["hello", "hello"]
    assert transport.pending(greeting) == 0
    assert transport.unforward(greeting)
    await greeting.send(Service, text="not forwarded")
    assert transport.pending(greeting) == 0


async def test_stop_before_any_message_and_running_twice_is_refused() -> None:
    """stop() ends a waiting consumer at once; a second concurrent run() raises."""
    transport = new_transport()
    consumer: MemoryConsumer = transport.consumer(["greeting", "other"])
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(consumer.run)
        await anyio.wait_all_tasks_blocked()
        with pytest.raises(RuntimeError, match="already running"):
            await consumer.run()
        consumer.stop()
    with pytest.raises(ValueError, match="at least 1"):
        transport.consumer(["greeting"], max_deliveries=0)
    with pytest.raises(ValueError, match="has no name"):
        transport.consumer([Signal(Greeting)])
