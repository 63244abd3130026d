"""Consumer processes (``aiosignals consume`` on tests/transports/_app.py) for the suites."""

from __future__ import annotations

import asyncio
import os
import signal as os_signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis.asyncio as aioredis

from tests.transports import _app
from tests.transports._support import eventually
from tests.transports.redis._streams import GROUP, text

if TYPE_CHECKING:
    from aiosignals.transports import RedisStreamTransport

ROOT = Path(__file__).resolve().parents[3]


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
    output = stderr.decode()
    assert process.returncode == 0, output
    return output


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
    """Wait until the consumers *names* have joined the group; fail if a process exits."""
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
