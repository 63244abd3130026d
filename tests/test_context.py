from __future__ import annotations

from contextvars import ContextVar
from typing import Any

import anyio.lowlevel
import pytest

from aiosignals import Concurrent, ErrorPolicy, Event, RecursionDepthError, Signal

pytestmark = pytest.mark.anyio


class Saved(Event):
    n: int = 0


def _recorder(log: list[str], name: str) -> Any:
    async def record(sender: object, payload: Saved) -> str:
        log.append(name)
        return name

    return record


async def test_muted_skips_all_receivers_in_this_task_only() -> None:
    """muted() delivers nothing in the current task while a concurrent task still receives."""
    signal = Signal(Saved)
    log: list[str] = []
    signal.connect(_recorder(log, "r"))
    entered = anyio.Event()
    release = anyio.Event()

    async def muted_task() -> None:
        with signal.muted():
            entered.set()
            assert await signal.send(None) == []
            await release.wait()
            assert await signal.send(None) == []

    async with anyio.create_task_group() as group:
        group.start_soon(muted_task)
        await entered.wait()
        await signal.send(None)  # another task, at the same time: receives
        release.set()
    assert log == ["r"]
    await signal.send(None)
    assert log == ["r", "r"]


async def test_muted_receivers_skips_only_those() -> None:
    """muted(receiver) skips that receiver and delivers to the others."""
    signal = Signal(Saved)
    log: list[str] = []
    noisy = _recorder(log, "noisy")
    quiet = _recorder(log, "quiet")
    signal.connect(noisy)
    signal.connect(quiet)
    with signal.muted(noisy):
        results = await signal.send(None)
        assert signal.receivers_for(None) == [quiet]
    assert [result for _, result in results] == ["quiet"]
    await signal.send(None)
    assert log == ["quiet", "noisy", "quiet"]


async def test_muted_applies_to_child_tasks() -> None:
    """A task started inside a muted() block inherits it."""
    signal = Signal(Saved)
    log: list[str] = []
    signal.connect(_recorder(log, "r"))
    with signal.muted():
        async with anyio.create_task_group() as group:
            group.start_soon(signal.send, None)
    assert log == []


async def test_connected_to_is_temporary_and_task_scoped() -> None:
    """connected_to() adds a receiver for the current task inside the block only."""
    signal = Signal(Saved)
    log: list[str] = []
    signal.connect(_recorder(log, "permanent"))
    temp = _recorder(log, "temp")
    inside = anyio.Event()
    done = anyio.Event()

    async def other_task() -> None:
        await inside.wait()
        await signal.send(None)
        done.set()

    async with anyio.create_task_group() as group:
        group.start_soon(other_task)
        with signal.connected_to(temp):
            await signal.send(None)
            inside.set()
            await done.wait()
        await signal.send(None)
    assert log == ["permanent", "temp", "permanent", "permanent"]


async def test_connected_to_honours_sender_and_priority() -> None:
    """A temporary receiver matches its sender and takes its place by priority."""
    signal = Signal(Saved)
    log: list[str] = []
    signal.connect(_recorder(log, "permanent"))

    class A:
        pass

    with signal.connected_to(_recorder(log, "first"), A, priority=1):
        await signal.send(A)
        await signal.send(None)
    assert log == ["first", "permanent", "permanent"]


def test_connected_to_rejects_bad_receiver() -> None:
    """connected_to checks the receiver like connect does."""
    signal = Signal(Saved)

    def no_args() -> None:
        pass

    with pytest.raises(TypeError), signal.connected_to(no_args):  # type: ignore[arg-type]
        pass


async def test_recursion_depth_error() -> None:
    """A receiver that re-sends its own signal forever hits RecursionDepthError."""
    signal = Signal(Saved, max_depth=5)
    depths: list[int] = []

    async def loop(sender: object, payload: Saved) -> None:
        depths.append(payload.n)
        await signal.send(sender, n=payload.n + 1)

    signal.connect(loop)
    with pytest.raises(RecursionDepthError, match="max_depth=5"):
        await signal.send(None, n=1)
    assert depths == [1, 2, 3, 4, 5]
    assert isinstance(RecursionDepthError("x"), RuntimeError)


async def test_mutual_recursion_between_signals() -> None:
    """The profile-saves-user-saves-profile loop across two signals is stopped too."""
    user_saved = Signal(Saved, max_depth=4)
    profile_saved = Signal(Saved, max_depth=4)

    async def on_user(sender: object, payload: Saved) -> None:
        await profile_saved.send(sender, n=payload.n + 1)

    async def on_profile(sender: object, payload: Saved) -> None:
        await user_saved.send(sender, n=payload.n + 1)

    user_saved.connect(on_user)
    profile_saved.connect(on_profile)
    with pytest.raises(RecursionDepthError):
        await user_saved.send(None)


async def test_depth_allows_max_depth_levels_and_resets() -> None:
    """Exactly max_depth nested levels are allowed, and the depth resets after a send."""
    signal = Signal(Saved, max_depth=3)
    reached: list[int] = []

    async def nest(sender: object, payload: Saved) -> None:
        reached.append(payload.n)
        if payload.n < 3:
            await signal.send(sender, n=payload.n + 1)

    signal.connect(nest)
    for _ in range(3):
        await signal.send(None, n=1)
    assert reached == [1, 2, 3] * 3


async def test_concurrent_sends_do_not_add_up_depth() -> None:
    """Many concurrent, non-nested sends never trip the recursion guard."""
    signal = Signal(Saved, max_depth=2, mode=Concurrent())
    calls: list[object] = []

    async def slow(sender: object, payload: Saved) -> None:
        await anyio.lowlevel.checkpoint()  # the other sends start meanwhile
        calls.append(sender)

    signal.connect(slow)
    signal.connect(slow, sender=1)
    # A RecursionDepthError in any of the 20 sends would fail the task group.
    async with anyio.create_task_group() as group:
        for _ in range(20):
            group.start_soon(signal.send, None)
    assert calls == [None] * 20


# -- context semantics ---------------------------------------------------------------------

_seen: ContextVar[str] = ContextVar("test_context_seen", default="unset")


def _setter(value: str, log: list[str]) -> Any:
    async def setter(sender: object, payload: Saved) -> None:
        log.append(_seen.get())
        _seen.set(value)

    return setter


async def test_sequential_receivers_run_in_the_senders_context() -> None:
    """A ContextVar set by a sequential receiver is seen by the next one and by the sender."""
    signal = Signal(Saved)
    log: list[str] = []
    signal.connect(_setter("first", log))
    signal.connect(_setter("second", log))
    await signal.send(None)
    assert log == ["unset", "first"]
    assert _seen.get() == "second"


@pytest.mark.parametrize("mode", [Concurrent(), Concurrent(limit=1), Concurrent(limit=2)])
async def test_concurrent_receivers_each_run_in_a_copy_of_the_context(mode: Concurrent) -> None:
    """A ContextVar set by a concurrent receiver is seen neither by another nor by the sender."""
    signal = Signal(Saved, mode=mode)
    log: list[str] = []
    for name in ("a", "b", "c"):
        signal.connect(_setter(name, log))
    _seen.set("sender")
    await signal.send(None)
    assert log == ["sender", "sender", "sender"]
    assert _seen.get() == "sender"


@pytest.mark.parametrize("errors", ["raise", "collect"])
async def test_a_concurrent_stage_of_one_receiver_runs_in_a_copy_too(errors: ErrorPolicy) -> None:
    """A lone receiver of a concurrent stage, suspending or not, sets nothing the sender sees."""
    signal = Signal(Saved, mode=Concurrent(), errors=errors)
    log: list[str] = []

    async def suspending(sender: object, payload: Saved) -> str:
        _seen.set("suspending")
        await anyio.lowlevel.checkpoint()
        return _seen.get()

    signal.connect(_setter("high", log), priority=10)
    signal.connect(suspending, priority=5)
    signal.connect(_setter("low", log), priority=1)
    _seen.set("sender")
    results = await signal.send(None)
    assert log == ["sender", "sender"]
    assert results[1][1] == "suspending"
    assert _seen.get() == "sender"


async def test_thread_receivers_run_in_a_copy_of_the_context() -> None:
    """A thread=True receiver sees the sender's ContextVars; what it sets stays in its copy."""
    signal = Signal(Saved)
    log: list[str] = []

    def in_thread(sender: object, payload: Saved) -> None:
        log.append(_seen.get())
        _seen.set("thread")

    signal.connect(in_thread, thread=True)
    _seen.set("sender")
    await signal.send(None)
    assert log == ["sender"]
    assert _seen.get() == "sender"


async def test_recursion_depth_error_names_the_receivers_of_the_loop() -> None:
    """RecursionDepthError names each receiver of a loop across two signals."""
    user_saved = Signal(Saved, max_depth=4)
    profile_saved = Signal(Saved, max_depth=4)

    async def save_profile(sender: object, payload: Saved) -> None:
        await profile_saved.send(sender, n=payload.n + 1)

    async def touch_user(sender: object, payload: Saved) -> None:
        await user_saved.send(sender, n=payload.n + 1)

    async def bystander(sender: object, payload: Saved) -> None:
        pass

    user_saved.connect(save_profile)
    user_saved.connect(bystander)
    profile_saved.connect(touch_user)
    with pytest.raises(RecursionDepthError) as info:
        await user_saved.send(None)
    message = str(info.value)
    assert "save_profile" in message
    assert "touch_user" in message
    assert "bystander" not in message
