"""
Consumer processes for the transport suites: ``aiosignals consume`` on tests/transports/_app.py.

Each process records what it handled in a Redis list (``{prefix}processed``), whatever
transport it reads, so that a test sees every delivery of every process.
"""

from __future__ import annotations

import asyncio
import os
import signal as os_signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tests.transports import _app

if TYPE_CHECKING:
    import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parents[2]


async def start_consume(
    source: tuple[str, str],
    record_url: str,
    prefix: str,
    name: str,
    *options: str,
    delay: float = 0.0,
    hang_after: int | None = None,
) -> asyncio.subprocess.Process:
    """
    Run ``aiosignals consume`` of ``tests.transports._app:ping`` in a new process.

    :param source: ``("--redis", url)`` or ``("--broker", url)``
    :param record_url: the Redis it records each handled message in
    :param delay: seconds its receiver takes per message
    :param hang_after: handle this many messages, then hang on the next one (recorded in
        ``<prefix>processed:hung``), so that the process surely holds a message when it is killed
    """
    env = {
        **os.environ,
        "AIOSIGNALS_TEST_RECORD_URL": record_url,
        "AIOSIGNALS_TEST_RECORD_KEY": f"{prefix}processed",
        "AIOSIGNALS_TEST_DELAY": str(delay),
        "AIOSIGNALS_TEST_HANG_AFTER": "" if hang_after is None else str(hang_after),
    }
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aiosignals",
        "consume",
        *source,
        "--app",
        "tests.transports._app:ping",
        "--prefix",
        prefix,
        "--consumer",
        name,
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
    """(consumer, n, deliveries) for each message the consumer processes handled."""
    rows = await _app.reply(client.lrange(f"{prefix}processed", 0, -1))
    result: list[tuple[str, int, int]] = []
    for row in rows:
        consumer, n, deliveries = (row.decode() if isinstance(row, bytes) else row).split("|")
        result.append((consumer, int(n), int(deliveries)))
    return result
