"""The test servers: what the ``redis`` marker promises is what the fixtures do."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests._servers import unavailable

ROOT = Path(__file__).parent.parent


def test_redis_tests_run_on_a_private_redis_server_when_no_url_is_set() -> None:
    """Without AIOSIGNALS_TEST_REDIS_URL, a Redis test runs on a redis-server of its own."""
    if shutil.which("redis-server") is None:
        unavailable("redis-server is not installed")
    env = {k: v for k, v in os.environ.items() if k != "AIOSIGNALS_TEST_REDIS_URL"}
    # Required: a skip would fail the run instead of passing it.
    env["AIOSIGNALS_REQUIRE_SERVICES"] = "1"
    result = subprocess.run(
        [
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
            "tests/transports/redis/test_publisher.py::test_the_stream_prefix_fixture_deletes_its_keys",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
