"""Every script in ``examples/`` runs, as a user would run it, and succeeds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"

# Examples that serve or wait for a peer take a flag that runs them to completion.
ARGS: dict[str, list[str]] = {
    "fastapi_app.py": ["--check"],
    "aiohttp_app.py": ["--check"],
    "redis_profiles.py": ["--check"],
}
NEEDS_REDIS = {"redis_profiles.py"}


@pytest.mark.parametrize("script", sorted(EXAMPLES.glob("*.py")), ids=lambda p: p.name)
def test_example_runs(script: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    env = {**os.environ, "PYTHONPATH": str(EXAMPLES.parent)}
    if script.name in NEEDS_REDIS:
        env["REDIS_URL"] = request.getfixturevalue("redis_server_url")
        env["STREAM_PREFIX"] = request.getfixturevalue("stream_prefix")
    result = subprocess.run(
        [sys.executable, str(script), *ARGS.get(script.name, [])],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
