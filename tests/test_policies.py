from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest

from aiosignals import Concurrent, Event, Sequential, Signal

pytestmark = pytest.mark.anyio


class Ping(Event):
    n: int = 0


class Boom(Exception):
    pass


def _ok(log: list[str], name: str, delay: float = 0) -> Any:
    async def ok(sender: object, payload: Ping) -> str:
        if delay:
            await anyio.sleep(delay)
        log.append(name)
        return name

    return ok


def _fail(log: list[str], name: str, delay: float = 0) -> Any:
    async def fail(sender: object, payload: Ping) -> None:
        if delay:
            await anyio.sleep(delay)
        log.append(name)
        raise Boom(name)

    return fail


async def test_sequential_raise_stops_at_first_failure_unchanged() -> None:
    """Sequential + raise: the first failure propagates unchanged and later receivers don't run."""
    signal = Signal(Ping)
    log: list[str] = []
    signal.connect(_ok(log, "a"))
    signal.connect(_fail(log, "b"))
    signal.connect(_ok(log, "c"))
    with pytest.raises(Boom, match="b"):
        await signal.send(None, n=1)
    assert log == ["a", "b"]


async def test_concurrent_raise_cancels_others_and_groups_failures() -> None:
    """Concurrent + raise: the others are cancelled and the failures come as an ExceptionGroup."""
    signal = Signal(Ping, mode=Concurrent())
    log: list[str] = []
    cancelled: list[str] = []

    async def slow(sender: object, payload: Ping) -> None:
        try:
            await anyio.sleep(5)
        except anyio.get_cancelled_exc_class():
            cancelled.append("slow")
            raise
        log.append("slow finished")

    signal.connect(_fail(log, "x"))
    signal.connect(_fail(log, "y"))
    signal.connect(slow)
    with anyio.fail_after(3):
        with pytest.raises(ExceptionGroup) as info:
            await signal.send(None)
    assert sorted(str(exc) for exc in info.value.exceptions) == ["x", "y"]
    assert all(isinstance(exc, Boom) for exc in info.value.exceptions)
    assert cancelled == ["slow"]
    assert "slow finished" not in log


async def test_concurrent_raise_with_one_receiver_is_still_a_group() -> None:
    """A single concurrent receiver's failure is an ExceptionGroup too, as with many."""
    signal = Signal(Ping, mode=Concurrent())
    signal.connect(_fail([], "only"))
    with pytest.raises(ExceptionGroup) as info:
        await signal.send(None)
    assert [str(exc) for exc in info.value.exceptions] == ["only"]


async def test_concurrent_failure_stops_later_stages() -> None:
    """Concurrent + raise: a failed stage stops the lower priorities from starting."""
    signal = Signal(Ping, mode=Concurrent())
    log: list[str] = []
    signal.connect(_fail(log, "audit"), priority=10)
    signal.connect(_ok(log, "rest"))
    with pytest.raises(ExceptionGroup):
        await signal.send(None)
    assert log == ["audit"]


@pytest.mark.parametrize("mode", [Sequential(), Concurrent(), Concurrent(limit=1)])
async def test_collect_runs_everyone_and_returns_failures(mode: Sequential | Concurrent) -> None:
    """collect: every receiver runs and a failure stands in place of its result."""
    signal = Signal(Ping, mode=mode, errors="collect")
    log: list[str] = []
    signal.connect(_ok(log, "a"))
    signal.connect(_fail(log, "b"))
    signal.connect(_ok(log, "c"))
    results = await signal.send(None)
    assert sorted(log) == ["a", "b", "c"]
    assert results[0][1] == "a"
    assert isinstance(results[1][1], Boom)
    assert results[2][1] == "c"


async def test_log_policy_logs_each_failure_with_its_receiver(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """log: like collect, and each failure is logged on the aiosignals logger with its receiver."""
    signal = Signal(Ping, name="pinged", errors="log")
    failing = _fail([], "b")
    signal.connect(failing)
    signal.connect(_ok([], "c"))
    with caplog.at_level(logging.ERROR, logger="aiosignals"):
        results = await signal.send(None)
    assert isinstance(results[0][1], Boom)
    assert results[1][1] == "c"
    [entry] = caplog.records
    assert entry.name == "aiosignals"
    assert repr(failing) in entry.getMessage()
    assert "pinged" in entry.getMessage()
    assert entry.exc_info is not None
    assert entry.exc_info[1] is results[0][1]


async def test_send_errors_overrides_signal_policy() -> None:
    """send(errors=...) overrides the signal's error policy for that send."""
    signal = Signal(Ping)
    signal.connect(_fail([], "b"))
    results = await signal.send(None, errors="collect")
    assert isinstance(results[0][1], Boom)
    with pytest.raises(Boom):
        await signal.send(None)
    with pytest.raises(ValueError, match="errors"):
        await signal.send(None, errors="nope")  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", [Sequential(), Concurrent()])
@pytest.mark.parametrize("errors", ["raise", "collect"])
async def test_cancellation_propagates_and_leaves_nothing_running(
    mode: Sequential | Concurrent, errors: Any
) -> None:
    """Cancelling a send cancels its receivers whatever the policy; none keeps running."""
    signal = Signal(Ping, mode=mode, errors=errors)
    started: list[str] = []
    finished: list[str] = []
    scope = anyio.CancelScope()

    def make(name: str) -> Any:
        async def slow(sender: object, payload: Ping) -> None:
            started.append(name)
            scope.cancel()  # the send is cancelled while its receivers wait
            await anyio.sleep_forever()
            finished.append(name)

        return slow

    signal.connect(make("a"))
    signal.connect(make("b"))
    with scope:
        await signal.send(None)
    assert scope.cancelled_caught
    await anyio.wait_all_tasks_blocked()
    assert started
    assert finished == []


async def test_base_exceptions_propagate_under_collect() -> None:
    """A BaseException that is not an Exception is never collected."""
    signal = Signal(Ping, errors="collect")

    async def interrupt(sender: object, payload: Ping) -> None:
        raise KeyboardInterrupt

    signal.connect(interrupt)
    with pytest.raises(KeyboardInterrupt):
        await signal.send(None)


# -- timeouts ---------------------------------------------------------------------------------


def _sleeper(seconds: float) -> Any:
    async def sleeper(sender: object, payload: Ping) -> str:
        await anyio.sleep(seconds)
        return "done"

    return sleeper


@pytest.mark.parametrize("mode", [Sequential(), Concurrent()])
async def test_receiver_timeout_fails_with_timeout_error(mode: Sequential | Concurrent) -> None:
    """A receiver past its own timeout fails with TimeoutError, handled by the policy."""
    signal = Signal(Ping, mode=mode, errors="collect")
    slow = _sleeper(5)
    quick = _sleeper(0)
    signal.connect(slow, timeout=0.05)
    signal.connect(quick)
    with anyio.fail_after(3):
        results = await signal.send(None)
    assert isinstance(results[0][1], TimeoutError)
    assert results[1][1] == "done"


async def test_signal_timeout_and_send_timeout() -> None:
    """The signal's timeout applies to every receiver; a send's timeout overrides it."""
    signal = Signal(Ping, timeout=0.05)
    signal.connect(_sleeper(0.2))
    with anyio.fail_after(3):
        with pytest.raises(TimeoutError):
            await signal.send(None)
        results = await signal.send(None, timeout=2)
    assert results[0][1] == "done"


async def test_smallest_timeout_wins() -> None:
    """A receiver runs at most the smallest of its own, the send's and the signal's timeouts."""
    signal = Signal(Ping, timeout=5)
    signal.connect(_sleeper(0.3), timeout=0.05)
    with anyio.fail_after(3):
        with pytest.raises(TimeoutError):
            await signal.send(None, timeout=10)


async def test_timeout_under_raise_in_concurrent_is_grouped() -> None:
    """A concurrent receiver's TimeoutError under raise comes in the ExceptionGroup."""
    signal = Signal(Ping, mode=Concurrent())
    signal.connect(_sleeper(5), timeout=0.05)
    signal.connect(_sleeper(5), timeout=0.05)
    with anyio.fail_after(3):
        with pytest.raises(ExceptionGroup) as info:
            await signal.send(None)
    assert all(isinstance(exc, TimeoutError) for exc in info.value.exceptions)


def test_timeout_must_be_positive() -> None:
    """A zero or negative receiver timeout is rejected at connect time."""
    with pytest.raises(ValueError, match="positive"):
        Signal(Ping).connect(_sleeper(0), timeout=0)


# -- a receiver's own error policy ----------------------------------------------------------


@pytest.mark.parametrize("mode", [Sequential(), Concurrent(), Concurrent(limit=1)])
async def test_a_receivers_own_policy_is_used_instead_of_the_sends(
    mode: Sequential | Concurrent, caplog: pytest.LogCaptureFixture
) -> None:
    """connect(errors="log") logs that receiver's failure under a raising send; others run."""
    signal = Signal(Ping, mode=mode)
    log: list[str] = []
    failing = signal.connect(_fail(log, "mail"), errors="log", priority=1)
    signal.connect(_ok(log, "after"))
    with caplog.at_level(logging.ERROR, logger="aiosignals"):
        results = await signal.send(None)
    assert [type(result) for _, result in results] == [Boom, str]
    assert results[0][0] is failing
    assert log == ["mail", "after"]
    assert any("mail" in str(record.exc_info) for record in caplog.records)


@pytest.mark.parametrize("mode", [Sequential(), Concurrent()])
async def test_a_receiver_that_must_raise_does_under_a_collecting_send(
    mode: Sequential | Concurrent,
) -> None:
    """connect(errors="raise") makes that receiver's failure propagate from a collecting send."""
    signal = Signal(Ping, mode=mode, errors="collect")
    log: list[str] = []
    signal.connect(_fail(log, "strict"), errors="raise")
    with pytest.raises((Boom, ExceptionGroup)) as info:
        await signal.send(None)
    failures = info.value.exceptions if isinstance(info.value, ExceptionGroup) else [info.value]
    assert [str(exc) for exc in failures] == ["strict"]


async def test_a_receivers_own_policy_applies_after_commit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An AFTER_COMMIT receiver with errors="log" does not fail the committed transaction."""
    from aiosignals import Phase
    from aiosignals.repository import MemoryRepository

    signal = Signal(Ping)
    log: list[str] = []
    signal.connect(_fail(log, "mail"), phase=Phase.AFTER_COMMIT, errors="log")
    signal.connect(_fail(log, "strict"), phase=Phase.AFTER_COMMIT)
    repository = MemoryRepository(Ping, key="n")
    with caplog.at_level(logging.ERROR, logger="aiosignals"), pytest.raises(Boom, match="strict"):
        async with repository.transaction():
            await signal.send(None)
    assert sorted(log) == ["mail", "strict"]
    assert any("mail" in str(record.exc_info) for record in caplog.records)

    signal.disconnect(signal.connections[1].receiver)
    with caplog.at_level(logging.ERROR, logger="aiosignals"):
        async with repository.transaction():
            await signal.send(None)  # the remaining receiver only logs


# -- cancellation raised by a receiver ------------------------------------------------------


async def _raise_a_cancellation() -> None:
    # A cancellation exception caught inside a cancelled scope and raised again outside
    # it: the same on asyncio and trio, where Cancelled has no public constructor.
    caught: list[BaseException] = []
    with anyio.CancelScope() as scope:
        scope.cancel()
        try:
            await anyio.sleep(1)
        except anyio.get_cancelled_exc_class() as exc:
            caught.append(exc)
            raise
    raise caught[0]


@pytest.mark.parametrize(
    "mode", [Sequential(), Concurrent(), Concurrent(limit=1), Concurrent(limit=2)]
)
async def test_a_receiver_raising_a_cancellation_never_yields_none_for_the_others(
    mode: Sequential | Concurrent, anyio_backend: str
) -> None:
    """A receiver raising the cancellation exception itself makes the send raise it too."""
    signal = Signal(Ping, mode=mode, errors="collect")
    log: list[str] = []

    async def cancels(sender: object, payload: Ping) -> None:
        log.append("cancels")
        await _raise_a_cancellation()

    signal.connect(cancels)
    signal.connect(_ok(log, "a"))
    signal.connect(_ok(log, "b"))
    with anyio.fail_after(3):
        with pytest.raises(anyio.get_cancelled_exc_class()):
            await signal.send(None)
    assert "cancels" in log


# -- once under a limit -----------------------------------------------------------------------


async def test_a_once_receiver_that_never_started_stays_connected() -> None:
    """Concurrent(limit=1) failing early keeps a once receiver that never ran connected."""
    signal = Signal(Ping, mode=Concurrent(limit=1))
    log: list[str] = []
    signal.connect(_fail(log, "first"))
    later = signal.connect(_ok(log, "once"), once=True)
    signal.connect(_ok(log, "third"))
    with pytest.raises(ExceptionGroup):
        await signal.send(None)
    assert log == ["first"]
    assert later in signal.receivers_for(None)


async def test_a_once_receiver_waiting_for_a_slot_survives_a_cancelled_send() -> None:
    """Concurrent(limit=1) cancelled before a once receiver starts leaves it connected."""
    signal = Signal(Ping, mode=Concurrent(limit=1))
    started = anyio.Event()
    log: list[str] = []

    async def blocks(sender: object, payload: Ping) -> None:
        if not started.is_set():
            started.set()
            await anyio.sleep_forever()

    signal.connect(blocks)
    later = signal.connect(_ok(log, "once"), once=True)
    signal.connect(_ok(log, "third"))
    async with anyio.create_task_group() as group:
        group.start_soon(signal.send, None)
        await started.wait()
        group.cancel_scope.cancel()
    assert log == []
    assert later in signal.receivers_for(None)
    await signal.send(None, mode=Concurrent(limit=1))
    assert "once" in log
    assert later not in signal.receivers_for(None)
