from __future__ import annotations

import asyncio
import gc
import warnings
from typing import Any

import trio
import trio.lowlevel

from aiosignals import Concurrent, Event, Signal


class Ping(Event):
    n: int = 0


def test_concurrent_sends_work_in_trio_guest_mode_on_an_asyncio_host() -> None:
    """Under trio guest mode on a running asyncio loop, concurrent sends run on trio."""
    signal = Signal(Ping, mode=Concurrent())
    seen: list[int] = []

    async def first(sender: object, payload: Ping) -> int:
        await trio.lowlevel.checkpoint()
        seen.append(1)
        return 1

    async def second(sender: object, payload: Ping) -> int:
        await trio.lowlevel.checkpoint()
        seen.append(2)
        return 2

    signal.connect(first)
    signal.connect(second)

    async def trio_main() -> list[Any]:
        return [result for _, result in await signal.send(None)]

    async def host() -> Any:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        trio.lowlevel.start_guest_run(
            trio_main,
            run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            done_callback=done.set_result,
            host_uses_signal_set_wakeup_fd=True,
        )
        outcome = await asyncio.wait_for(done, 5)
        return outcome.unwrap()

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a never-awaited coroutine must fail the test
        results = asyncio.run(host())
        gc.collect()
    assert results == [1, 2]
    assert sorted(seen) == [1, 2]
