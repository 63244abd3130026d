from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import pydantic
import pytest

from aiosignals import BufferFull, Event, EventBus, Signal

pytestmark = pytest.mark.anyio


class Ping(Event):
    n: int


class Other(Event):
    text: str


class Boom(Exception):
    pass


class Service:
    pass


def _recording(log: list[int]) -> Signal[Ping]:
    signal = Signal(Ping, name="ping")

    async def record(sender: object, payload: Ping) -> None:
        log.append(payload.n)

    signal.connect(record)
    return signal


async def test_one_worker_delivers_in_publish_order() -> None:
    """With one worker every event is delivered once, in the order it was published."""
    log: list[int] = []
    signal = _recording(log)
    async with EventBus(workers=1) as bus:
        for n in range(50):
            await bus.publish(signal, Service, Ping(n=n))
    assert log == list(range(50))
    assert (bus.delivered, bus.failed, bus.pending, bus.undelivered) == (50, 0, 0, [])


async def test_receiver_gets_sender_and_payload() -> None:
    """A worker calls signal.send(sender, payload) with exactly what was published."""
    seen: list[tuple[object, Ping]] = []
    signal = Signal(Ping)

    async def record(sender: object, payload: Ping) -> None:
        seen.append((sender, payload))

    signal.connect(record)
    payload = Ping(n=7)
    async with EventBus() as bus:
        await bus.publish(signal, Service, payload)
    assert seen == [(Service, payload)]
    assert seen[0][1] is payload


async def test_workers_deliver_concurrently() -> None:
    """With workers=N, N sends run at the same time."""
    signal = Signal(Ping)
    running = 0
    peak = 0
    all_in = anyio.Event()

    async def wait_for_the_others(sender: object, payload: Ping) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running == 3:
            all_in.set()
        # Each send waits until three run at once: one worker alone would never get here.
        await all_in.wait()
        running -= 1

    signal.connect(wait_for_the_others)
    with anyio.fail_after(3):
        async with EventBus(workers=3) as bus:
            for n in range(6):
                await bus.publish(signal, Service, Ping(n=n))
    assert peak == 3
    assert bus.delivered == 6


async def test_publish_waits_while_the_buffer_is_full() -> None:
    """publish blocks while max_buffer events wait, and resumes when a worker takes one."""
    log: list[int] = []
    signal = Signal(Ping)
    started = anyio.Event()
    release = anyio.Event()
    published = anyio.Event()

    async def slow_first(sender: object, payload: Ping) -> None:
        if payload.n == 0:
            started.set()
            await release.wait()
        log.append(payload.n)

    signal.connect(slow_first)
    with anyio.fail_after(3):
        async with EventBus(max_buffer=2) as bus, anyio.create_task_group() as group:
            await bus.publish(signal, Service, Ping(n=0))
            await started.wait()  # the worker holds event 0
            await bus.publish(signal, Service, Ping(n=1))
            await bus.publish(signal, Service, Ping(n=2))
            assert bus.pending == 2

            async def publish_third() -> None:
                await bus.publish(signal, Service, Ping(n=3))
                published.set()

            group.start_soon(publish_third)
            await anyio.wait_all_tasks_blocked()
            assert not published.is_set()  # blocked: the buffer is full
            assert bus.pending == 2
            release.set()
            await published.wait()
    assert log == [0, 1, 2, 3]
    assert bus.delivered == 4


async def test_publish_nowait_raises_buffer_full_and_keeps_what_it_accepted() -> None:
    """publish_nowait raises BufferFull, naming size and signal, and loses nothing accepted."""
    log: list[int] = []
    signal = Signal(Ping, name="ping")
    started = anyio.Event()
    release = anyio.Event()

    async def slow_first(sender: object, payload: Ping) -> None:
        if payload.n == 0:
            started.set()
            await release.wait()
        log.append(payload.n)

    signal.connect(slow_first)
    async with EventBus(max_buffer=2) as bus:
        bus.publish_nowait(signal, Service, Ping(n=0))
        await started.wait()
        bus.publish_nowait(signal, Service, Ping(n=1))
        bus.publish_nowait(signal, Service, Ping(n=2))
        with pytest.raises(BufferFull, match=r"full \(2 events waiting\).*ping") as info:
            bus.publish_nowait(signal, Service, Ping(n=3))
        assert "max_buffer" in str(info.value)
        assert bus.pending == 2
        release.set()
    assert log == [0, 1, 2]
    assert (bus.delivered, bus.undelivered) == (3, [])


async def test_leaving_the_block_drains_everything_queued() -> None:
    """Events still queued when the block ends are delivered before the exit returns."""
    log: list[int] = []
    signal = Signal(Ping)

    async def yielding(sender: object, payload: Ping) -> None:
        await anyio.lowlevel.checkpoint()
        log.append(payload.n)

    signal.connect(yielding)
    async with EventBus(max_buffer=100, workers=2) as bus:
        for n in range(100):
            bus.publish_nowait(signal, Service, Ping(n=n))
        assert bus.pending > 0
    assert sorted(log) == list(range(100))
    assert (bus.delivered, bus.pending, bus.undelivered) == (100, 0, [])


async def test_body_exception_drains_then_propagates_unchanged() -> None:
    """When the body raises, queued events are still delivered and the exception is re-raised."""
    log: list[int] = []
    signal = _recording(log)
    bus = EventBus()
    with pytest.raises(Boom, match="body"):
        async with bus:
            for n in range(5):
                bus.publish_nowait(signal, Service, Ping(n=n))
            raise Boom("body")
    assert log == [0, 1, 2, 3, 4]
    assert bus.delivered == 5


async def test_drain_deadline_reports_undelivered_and_returns_in_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Past drain_timeout the exit returns; events not delivered are logged and kept."""
    signal = Signal(Ping, name="stuck")
    cancelled = anyio.Event()

    async def blocks_forever(sender: object, payload: Ping) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()

    signal.connect(blocks_forever)
    payloads = [Ping(n=n) for n in range(3)]
    caplog.set_level(logging.WARNING, logger="aiosignals")
    bus = EventBus(drain_timeout=0.2)
    async with bus:
        for payload in payloads:
            await bus.publish(signal, Service, payload)
        start = anyio.current_time()
    elapsed = anyio.current_time() - start
    assert 0.2 <= elapsed < 1.0
    assert cancelled.is_set()  # the stuck send was cut off, not left running
    assert bus.undelivered == [(signal, Service, payload) for payload in payloads]
    assert (bus.delivered, bus.failed) == (0, 0)
    [record] = [r for r in caplog.records if r.name == "aiosignals"]
    assert record.levelno == logging.WARNING
    assert "3 event(s) not delivered" in record.getMessage()
    assert "drain_timeout=0.2s" in record.getMessage()
    assert "stuck" in record.getMessage()


async def test_failing_delivery_is_logged_and_the_worker_continues(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A send that raises is logged with signal and sender and counted; later events arrive."""
    log: list[int] = []
    signal = Signal(Ping, name="fragile")

    async def fails_on_one(sender: object, payload: Ping) -> None:
        if payload.n == 1:
            raise Boom("one")
        log.append(payload.n)

    signal.connect(fails_on_one)
    caplog.set_level(logging.ERROR, logger="aiosignals")
    async with EventBus() as bus:
        for n in range(3):
            await bus.publish(signal, Service, Ping(n=n))
    assert log == [0, 2]
    assert (bus.delivered, bus.failed) == (2, 1)
    [record] = [r for r in caplog.records if r.name == "aiosignals"]
    assert record.levelno == logging.ERROR
    assert "fragile" in record.getMessage()
    assert "Service" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], Boom)


async def test_signal_error_policy_applies() -> None:
    """The signal's own policy decides: with errors="collect" a failing receiver is no failure."""
    log: list[int] = []
    signal = Signal(Ping, errors="collect")

    async def fails(sender: object, payload: Ping) -> None:
        raise Boom

    async def records(sender: object, payload: Ping) -> None:
        log.append(payload.n)

    signal.connect(fails)
    signal.connect(records)
    async with EventBus() as bus:
        await bus.publish(signal, Service, Ping(n=1))
    assert log == [1]
    assert (bus.delivered, bus.failed) == (1, 0)


async def test_publish_outside_the_block_raises() -> None:
    """Publishing before the block or after it closed raises a RuntimeError saying so."""
    signal = Signal(Ping)
    bus = EventBus()
    with pytest.raises(RuntimeError, match="has not been started"):
        await bus.publish(signal, Service, Ping(n=0))
    async with bus:
        assert bus.running
    assert not bus.running
    with pytest.raises(RuntimeError, match="has closed"):
        await bus.publish(signal, Service, Ping(n=0))
    with pytest.raises(RuntimeError, match="has closed"):
        bus.publish_nowait(signal, Service, Ping(n=0))
    with pytest.raises(RuntimeError, match="already been used"):
        async with bus:
            pass


async def test_publisher_waiting_when_the_bus_closes_is_told() -> None:
    """A publish still waiting for room when the bus closes raises instead of losing the event."""
    signal = Signal(Ping)
    started = anyio.Event()

    async def blocks_forever(sender: object, payload: Ping) -> None:
        started.set()
        await anyio.sleep_forever()

    signal.connect(blocks_forever)
    errors: list[Exception] = []

    async def publish_late(bus: EventBus) -> None:
        try:
            await bus.publish(signal, Service, Ping(n=2))
        except RuntimeError as exc:
            errors.append(exc)

    with anyio.fail_after(3):
        async with (
            anyio.create_task_group() as group,
            EventBus(max_buffer=1, drain_timeout=0.05) as bus,
        ):
            await bus.publish(signal, Service, Ping(n=0))
            await started.wait()
            await bus.publish(signal, Service, Ping(n=1))
            group.start_soon(publish_late, bus)
            await anyio.wait_all_tasks_blocked()
    [error] = errors
    assert "closed while this publish waited" in str(error)
    assert [payload.n for _, _, payload in bus.undelivered] == [0, 1]  # type: ignore[attr-defined]


def _chained(bus: EventBus, log: list[str]) -> tuple[Signal[Ping], Signal[Ping]]:
    """A signal whose receiver publishes a follow-up event to *bus*, as the examples do."""
    first, second = Signal(Ping, name="first"), Signal(Ping, name="second")

    async def follow_up(sender: object, payload: Ping) -> None:
        log.append(f"first {payload.n}")
        await bus.publish(second, Service, payload)

    async def record(sender: object, payload: Ping) -> None:
        log.append(f"second {payload.n}")

    first.connect(follow_up)
    second.connect(record)
    return first, second


async def test_a_receiver_publishing_to_a_full_bus_does_not_deadlock() -> None:
    """With one worker and a full buffer, a follow-up publish is accepted at once."""
    log: list[str] = []
    bus = EventBus(max_buffer=2, workers=1)
    first, _ = _chained(bus, log)
    with anyio.fail_after(3):
        async with bus:
            for n in range(10):
                await bus.publish(first, Service, Ping(n=n))
            # Still enforced for outside publishers while follow-ups run over the limit.
            await bus.publish(first, Service, Ping(n=10))
            with pytest.raises(BufferFull):
                for n in range(11, 14):
                    bus.publish_nowait(first, Service, Ping(n=n))
    assert (bus.failed, bus.undelivered) == (0, [])
    # Each follow-up is delivered right after the event that published it.
    accepted = bus.delivered // 2
    assert accepted >= 11
    assert log == [f"{kind} {n}" for n in range(accepted) for kind in ("first", "second")]


async def test_follow_ups_published_while_draining_are_delivered() -> None:
    """Leaving the block does not refuse a receiver's follow-up: it joins the drain."""
    log: list[str] = []
    bus = EventBus(max_buffer=1, workers=2)
    first, _ = _chained(bus, log)
    async with bus:
        for n in range(3):
            await bus.publish(first, Service, Ping(n=n))
    assert sorted(log) == sorted(f"{kind} {n}" for n in range(3) for kind in ("first", "second"))
    assert (bus.delivered, bus.failed, bus.undelivered) == (6, 0, [])


async def test_follow_ups_not_delivered_by_the_drain_deadline_are_kept() -> None:
    """A follow-up still queued (or running) when drain_timeout runs out is in undelivered."""
    first, second, third = Signal(Ping, name="a"), Signal(Ping, name="b"), Signal(Ping, name="c")
    bus = EventBus(workers=1, drain_timeout=0.2)

    async def follow_up(sender: object, payload: Ping) -> None:
        await bus.publish(second, Service, Ping(n=payload.n + 1))
        bus.publish_nowait(third, Service, Ping(n=payload.n + 2))

    async def blocks_forever(sender: object, payload: Ping) -> None:
        await anyio.sleep_forever()

    first.connect(follow_up)
    second.connect(blocks_forever)
    with anyio.fail_after(3):
        async with bus:
            await bus.publish(first, Service, Ping(n=0))
    assert bus.undelivered == [(second, Service, Ping(n=1)), (third, Service, Ping(n=2))]
    assert (bus.delivered, bus.failed, bus.pending) == (1, 0, 0)
    # From outside, after the block: refused loudly, as before.
    with pytest.raises(RuntimeError, match="has closed"):
        await bus.publish(first, Service, Ping(n=5))


async def test_wrong_payload_is_rejected_at_publish() -> None:
    """A payload of another type fails in the publisher, before anything is queued."""
    signal = Signal(Ping)
    async with EventBus() as bus:
        with pytest.raises(pydantic.ValidationError):
            await bus.publish(signal, Service, Other(text="x"))  # type: ignore[misc]
        with pytest.raises(pydantic.ValidationError):
            bus.publish_nowait(signal, Service, {"n": "not a number"})  # type: ignore[misc]
        with pytest.raises(TypeError, match="needs a Signal"):
            await bus.publish(object(), Service, Ping(n=1))  # type: ignore[arg-type]
        assert bus.pending == 0
    assert bus.delivered == 0


async def test_cancelling_the_enclosing_scope_stops_the_workers() -> None:
    """Cancelling around the bus cancels its workers at once and leaves no task running."""
    signal = Signal(Ping)
    started = anyio.Event()
    cancelled: list[int] = []

    async def blocks_forever(sender: object, payload: Ping) -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.append(payload.n)

    signal.connect(blocks_forever)
    tasks_before = len(anyio.get_running_tasks())
    bus = EventBus(drain_timeout=60)
    with anyio.fail_after(2), anyio.CancelScope() as scope:
        async with bus:
            await bus.publish(signal, Service, Ping(n=0))
            await bus.publish(signal, Service, Ping(n=1))
            await started.wait()
            scope.cancel()
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert cancelled == [0]
    assert [p.n for _, _, p in bus.undelivered] == [0, 1]  # type: ignore[attr-defined]
    await anyio.wait_all_tasks_blocked()
    assert len(anyio.get_running_tasks()) == tasks_before


async def test_cancelled_while_draining_stops_promptly() -> None:
    """A cancellation arriving while the exit drains is not held up by the drain deadline."""
    signal = Signal(Ping)

    async def blocks_forever(sender: object, payload: Ping) -> None:
        await anyio.sleep_forever()

    signal.connect(blocks_forever)
    tasks_before = len(anyio.get_running_tasks())
    bus = EventBus(drain_timeout=60)
    start = anyio.current_time()
    with anyio.move_on_after(0.1) as scope:
        async with bus:
            await bus.publish(signal, Service, Ping(n=0))
    assert scope.cancelled_caught
    assert anyio.current_time() - start < 1.0
    assert len(bus.undelivered) == 1
    assert len(anyio.get_running_tasks()) == tasks_before


def test_a_bus_is_built_outside_an_event_loop() -> None:
    """EventBus() needs no running loop: apps build theirs at import time or in a factory."""
    bus = EventBus(workers=2)
    assert not bus.running
    assert (bus.pending, bus.delivered, bus.failed) == (0, 0, 0)

    async def main() -> int:
        async with bus:
            await bus.publish(_recording(log), Service, Ping(n=1))
        return bus.delivered

    log: list[int] = []
    assert anyio.run(main) == 1
    assert log == [1]


def test_invalid_settings_are_rejected() -> None:
    """Sizes below one and negative deadlines are a ValueError."""
    with pytest.raises(ValueError, match="max_buffer"):
        EventBus(max_buffer=0)
    with pytest.raises(ValueError, match="workers"):
        EventBus(workers=0)
    with pytest.raises(ValueError, match="drain_timeout"):
        EventBus(drain_timeout=-1)


@pytest.mark.parametrize("bad", [True, "10", None])
def test_a_drain_timeout_that_is_not_a_number_is_a_type_error(bad: object) -> None:
    """drain_timeout=True (not 1 s) or a string from config is refused, naming the option."""
    with pytest.raises(TypeError, match="drain_timeout must be a number of seconds"):
        EventBus(drain_timeout=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), True, "1"])
@pytest.mark.parametrize("option", ["max_buffer", "workers"])
def test_sizes_must_be_ints(option: str, bad: object) -> None:
    """A size that is not an int is refused at construction (max_buffer=nan failed at start)."""
    with pytest.raises(TypeError, match=option):
        EventBus(**{option: bad})  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]


if TYPE_CHECKING:

    async def typecheck_publish_payload(bus: EventBus, ping: Signal[Ping]) -> None:
        await bus.publish(ping, Service, Ping(n=1))
        bus.publish_nowait(ping, Service, Ping(n=1))
        await bus.publish(ping, Service, Other(text="x"))  # type: ignore[misc]
        bus.publish_nowait(ping, Service, Other(text="x"))  # type: ignore[misc]
        undelivered: list[tuple[Signal[Any], Any, Event]] = bus.undelivered
        del undelivered


async def _raise_a_cancellation() -> None:
    # A cancellation exception raised by a receiver itself, outside any cancelled scope:
    # caught inside a cancelled scope and raised again once out of it (asyncio and trio).
    caught: list[BaseException] = []
    with anyio.CancelScope() as scope:
        scope.cancel()
        try:
            await anyio.sleep(1)
        except anyio.get_cancelled_exc_class() as exc:
            caught.append(exc)
            raise
    raise caught[0]


async def test_a_receiver_raising_a_cancellation_does_not_stop_the_bus(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A receiver raising the cancellation exception is a failed delivery; the bus goes on."""
    log: list[int] = []
    signal = Signal(Ping, name="cancelling")

    async def cancels_on_one(sender: object, payload: Ping) -> None:
        if payload.n == 1:
            await _raise_a_cancellation()
        log.append(payload.n)

    signal.connect(cancels_on_one)
    caplog.set_level(logging.ERROR, logger="aiosignals")
    with anyio.fail_after(5):
        async with EventBus(max_buffer=1) as bus:
            for n in range(5):
                await bus.publish(signal, Service, Ping(n=n))
    assert log == [0, 2, 3, 4]
    assert (bus.delivered, bus.failed) == (4, 1)
    assert bus.undelivered == []
    assert any("cancelling" in r.getMessage() for r in caplog.records)


async def test_publish_from_another_thread_is_refused_naming_from_thread() -> None:
    """publish_nowait from a worker thread raises a RuntimeError naming anyio.from_thread."""
    log: list[int] = []
    signal = _recording(log)
    async with EventBus() as bus:
        with pytest.raises(RuntimeError, match=r"anyio\.from_thread"):
            await anyio.to_thread.run_sync(bus.publish_nowait, signal, Service, Ping(n=1))
        assert bus.pending == 0
    assert log == []


async def test_publish_from_another_event_loop_is_refused() -> None:
    """await publish() on another event loop in another thread raises, naming from_thread."""
    log: list[int] = []
    signal = _recording(log)
    errors: list[BaseException] = []

    def other_loop() -> None:
        try:
            anyio.run(bus.publish, signal, Service, Ping(n=1))
        except RuntimeError as exc:
            errors.append(exc)

    async with EventBus() as bus:
        await anyio.to_thread.run_sync(other_loop)
    assert len(errors) == 1
    assert "anyio.from_thread" in str(errors[0])
    assert log == []


async def test_publish_through_from_thread_is_delivered_promptly() -> None:
    """anyio.from_thread.run(bus.publish, ...) from a worker thread is delivered at once."""
    log: list[int] = []
    signal = _recording(log)
    async with EventBus() as bus:
        with anyio.fail_after(2):
            await anyio.to_thread.run_sync(
                lambda: anyio.from_thread.run(bus.publish, signal, Service, Ping(n=7))
            )
            while not log:
                await anyio.sleep(0.001)
    assert log == [7]
