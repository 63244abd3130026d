from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import anyio
import anyio.from_thread
import anyio.lowlevel
import pytest

from aiosignals import Concurrent, Event, Signal

pytestmark = pytest.mark.anyio


class Job(Event):
    n: int = 0


async def test_timed_out_thread_receivers_stay_within_the_thread_limit() -> None:
    """60 sends whose thread receiver times out never run more than 40 receiver threads."""
    release = threading.Event()
    running = 0
    most = 0
    lock = threading.Lock()

    def stuck(sender: object, payload: Job) -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        try:
            release.wait(10)
        finally:
            with lock:
                running -= 1

    signal = Signal(Job, errors="collect", timeout=0.05, mode=Concurrent())
    signal.connect(stuck, thread=True)
    try:
        async with anyio.create_task_group() as group:
            for n in range(60):
                group.start_soon(signal.send, None, Job(n=n))
        assert most <= 40
    finally:
        release.set()
    with anyio.fail_after(5):
        while running:
            await anyio.sleep(0.01)


async def test_a_thread_receiver_that_times_out_fails_with_timeout_error() -> None:
    """A thread=True receiver past its timeout fails with TimeoutError, the send goes on."""
    release = threading.Event()

    def stuck(sender: object, payload: Job) -> None:
        release.wait(10)

    signal = Signal(Job, errors="collect")
    signal.connect(stuck, thread=True, timeout=0.05)
    try:
        [(_, outcome)] = await signal.send(None)
        assert isinstance(outcome, TimeoutError)
    finally:
        release.set()


async def test_a_thread_receivers_exception_reaches_the_send() -> None:
    """What a thread=True receiver raises is raised by the send, as from any receiver."""

    def fails(sender: object, payload: Job) -> None:
        raise LookupError("in the thread")

    signal = Signal(Job)
    signal.connect(fails, thread=True)
    with pytest.raises(LookupError, match="in the thread"):
        await signal.send(None)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_process_exits_promptly_with_a_timed_out_thread_receiver_running(backend: str) -> None:
    """A process whose thread receiver timed out and still runs exits at once, not in 60 s."""
    script = textwrap.dedent(
        f"""
        import time
        import anyio
        from aiosignals import Event, Signal

        class Job(Event):
            n: int = 0

        def stuck(sender, payload):
            time.sleep(60)

        signal = Signal(Job, errors="collect")
        signal.connect(stuck, thread=True, timeout=0.1)

        async def main():
            [(_, outcome)] = await signal.send(None)
            print(type(outcome).__name__, flush=True)

        anyio.run(main, backend={backend!r})
        """
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "TimeoutError"
    assert time.monotonic() - started < 10


async def test_a_thread_receiver_calls_back_into_the_event_loop_with_a_token() -> None:
    """A thread=True receiver reaches the event loop through anyio.from_thread and a token."""
    token = anyio.lowlevel.current_token()
    loop_thread = threading.get_ident()

    def back(sender: object, payload: Job) -> int:
        return anyio.from_thread.run_sync(threading.get_ident, token=token)

    signal = Signal(Job)
    signal.connect(back, thread=True)
    assert await signal.send(None) == [(back, loop_thread)]
