"""``aiosignals consume --redis``: consumer processes, and what --app accepts."""

from __future__ import annotations

import signal as os_signal
from typing import TYPE_CHECKING

import pytest

from aiosignals._cli import main as cli_main
from aiosignals.transports._cli import load_signals
from tests.transports import _app
from tests.transports._processes import records, stop_consumer
from tests.transports._support import (
    eventually,
)
from tests.transports.redis._processes import start_consumer, wait_for_consumers
from tests.transports.redis._streams import (
    pending,
)

if TYPE_CHECKING:
    from aiosignals.transports import (
        RedisStreamTransport,
    )

pytestmark = pytest.mark.redis


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
    # Read after both stopped, so that a duplicate of theirs would be there.
    handled = await records(transport.client, stream_prefix)
    assert sorted(n for _, n, _ in handled) == list(range(1000))
    assert {consumer for consumer, _, _ in handled} == {"a", "b"}
    assert await pending(transport.client, transport.stream_name(_app.ping)) == 0
    assert all("aiosignals consume: stopped; " in output for output in outputs)


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
    assert "no module named 'no_such_module_xyz'" in capsys.readouterr().err


def test_load_signals_takes_a_signal_a_list_or_a_module() -> None:
    """--app names a signal, a list of signals, or a module whose named signals all count."""
    assert load_signals("tests.transports._app:ping") == [_app.ping]
    assert load_signals("tests.transports._app") == [_app.ping]
    assert load_signals(f"{__name__}:SIGNALS") == [_app.ping]


SIGNALS = [_app.ping, _app.ping]
