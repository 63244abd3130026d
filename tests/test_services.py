"""``scripts/services.sh``: the servers it starts, in the URL forms tests and examples read."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests._servers import unavailable

ROOT = Path(__file__).parent.parent


def test_services_export_the_urls_of_the_tests_and_of_the_examples() -> None:
    """Both URL forms are exported, and an example runs on the DATABASE_URL as given."""
    if shutil.which("redis-server") is None or not list(Path("/usr/lib/postgresql").glob("*")):
        unavailable("PostgreSQL or redis-server is not installed")
    script = str(ROOT / "scripts" / "services.sh")
    # Not under pytest's tmp_path: under root the server runs as `postgres`, which must be
    # able to reach the directory, and pytest's base directory is private to its user.
    directory = tempfile.mkdtemp(prefix="aiosignals-services-")
    started = subprocess.run(
        [script, "start", directory],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    try:
        exports = dict(
            shlex.split(line)[1].split("=", 1)
            for line in started.stdout.splitlines()
            if line.startswith("export ")
        )
        assert exports["REDIS_URL"] == exports["AIOSIGNALS_TEST_REDIS_URL"]
        server = exports["AIOSIGNALS_TEST_POSTGRES_URL"].removeprefix("postgresql://")
        assert exports["DATABASE_URL"] == f"postgresql+asyncpg://{server}"
        env = {**os.environ, **exports}
        result = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "post_save_profile.py")],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "postgresql+asyncpg://" in result.stdout
    finally:
        subprocess.run([script, "stop", directory], timeout=60, check=False)
        shutil.rmtree(directory, ignore_errors=True)
