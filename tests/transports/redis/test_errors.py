"""Connection trouble is retried; refused credentials or rights are not."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest
import redis.asyncio as aioredis

from aiosignals import Signal
from aiosignals.transports import (
    RedisStreamTransport,
)
from tests.transports import _app
from tests.transports._processes import ROOT
from tests.transports._support import (
    Greeting,
    eventually,
    running,
)
from tests.transports.redis._streams import (
    pending,
)

if TYPE_CHECKING:
    from tests._servers import RedisProcess

pytestmark = pytest.mark.redis


def failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The consumer's reports of a failed connection."""
    return [r for r in caplog.records if "Redis connection failed" in r.getMessage()]


@pytest.mark.asyncio
async def test_redis_restart_mid_run_loses_nothing(
    redis_process: RedisProcess, stream_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The consumer backs off while Redis is down, reconnects, and every entry is handled once."""
    caplog.set_level(logging.WARNING, logger="aiosignals.redis")
    ping = Signal(_app.Ping, name="restart-ping")
    seen: list[int] = []

    @ping.connect
    async def slow(sender: Any, payload: _app.Ping) -> None:
        await asyncio.sleep(0.005)
        seen.append(payload.n)

    async with RedisStreamTransport(redis_process.url, stream_prefix=stream_prefix) as transport:
        stream = transport.stream_name(ping)
        for n in range(100):
            await transport.publish(ping, None, _app.Ping(n=n))
        # Small reads, so that Redis stops while entries are still to be read.
        subscriber = transport.consumer(
            [ping], count=10, block=0.2, reconnect_delay=0.05, max_reconnect_delay=0.4
        )
        async with running(subscriber):

            async def some_seen() -> bool:
                return len(seen) >= 20

            await eventually(some_seen)
            redis_process.stop()

            async def retried_twice() -> bool:
                """It failed to reconnect at least twice: it backs off and tries again."""
                return len(failures(caplog)) >= 2

            await eventually(retried_twice)
            assert len(seen) < 100
            redis_process.start()
            for n in range(100, 110):
                await transport.publish(ping, None, _app.Ping(n=n))

            async def all_seen() -> bool:
                return set(seen) == set(range(110)) and await pending(transport.client, stream) == 0

            await eventually(all_seen)
        assert sorted(seen) == list(range(110))  # None lost, none twice.
    assert all(r.levelno == logging.WARNING for r in failures(caplog))


def require_password(server: RedisProcess) -> None:
    """Make *server* require the password ``secret`` (and know a user without stream rights)."""
    import redis

    with redis.Redis.from_url(server.url) as client:
        client.acl_setuser("pinger", enabled=True, passwords=["+pinger"], commands=["+ping"])
        client.config_set("requirepass", "secret")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("credentials", "error"),
    [
        (":wrong@", "AuthenticationError"),  # WRONGPASS
        ("", "AuthenticationError"),  # NOAUTH
        ("pinger:pinger@", "NoPermissionError"),  # NOPERM for the stream commands
    ],
)
async def test_refused_credentials_are_fatal_not_retried(
    redis_process: RedisProcess,
    stream_prefix: str,
    caplog: pytest.LogCaptureFixture,
    credentials: str,
    error: str,
) -> None:
    """
    A wrong password, a missing one or a user without the rights makes run() raise at once,
    saying so, instead of retrying forever as a connection failure.
    """
    caplog.set_level(logging.WARNING, logger="aiosignals.redis")
    require_password(redis_process)
    url = redis_process.url.replace("redis://", f"redis://{credentials}")
    greeting = Signal(Greeting, name="greeting")
    async with RedisStreamTransport(url, stream_prefix=stream_prefix) as transport:
        subscriber = transport.consumer([greeting], reconnect_delay=0.01, max_reconnect_delay=0.05)
        with pytest.raises(aioredis.RedisError) as caught:
            await asyncio.wait_for(subscriber.run(), 5)
        assert type(caught.value).__name__ == error
        assert any("not retried" in note for note in getattr(caught.value, "__notes__", []))
        # The failed run has ended: running again fails the same way, not as "already running".
        with pytest.raises(aioredis.RedisError):
            await asyncio.wait_for(subscriber.run(), 5)
    assert not [r for r in caplog.records if "connection failed" in r.getMessage()]


def test_cli_exits_non_zero_on_a_wrong_password(
    redis_process: RedisProcess, stream_prefix: str
) -> None:
    """``aiosignals consume`` with a wrong password fails at once with status 1 and says why."""
    require_password(redis_process)
    url = redis_process.url.replace("redis://", "redis://:wrong@")
    argv = ["consume", "--redis", url, "--app", "tests.transports._app:ping"]
    result = subprocess.run(
        [sys.executable, "-m", "aiosignals", *argv, "--prefix", stream_prefix],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "Redis refused this consumer" in result.stderr
    assert "AuthenticationError" in result.stderr
    assert "Traceback" not in result.stderr
