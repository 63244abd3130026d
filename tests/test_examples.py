"""Every script in ``examples/`` runs, as a user would run it, and succeeds."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests._servers import example_env, free_port

EXAMPLES = Path(__file__).parent.parent / "examples"

# Examples that serve or wait for a peer take a flag that runs them to completion.
ARGS: dict[str, list[str]] = {
    "fastapi_app.py": ["--check"],
    "aiohttp_app.py": ["--check"],
    "redis_profiles.py": ["--check"],
}
NEEDS_REDIS = {"redis_profiles.py"}


def run_example(
    script: Path, env: dict[str, str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), *ARGS.get(script.name, [])],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def redis_env(request: pytest.FixtureRequest) -> dict[str, str]:
    return {
        "REDIS_URL": request.getfixturevalue("redis_server_url"),
        "STREAM_PREFIX": request.getfixturevalue("stream_prefix"),
    }


@pytest.mark.parametrize("script", sorted(EXAMPLES.glob("*.py")), ids=lambda p: p.name)
def test_example_runs(script: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Each example runs to completion on its default database."""
    extra = redis_env(request) if script.name in NEEDS_REDIS else {}
    result = run_example(script, example_env(**extra), tmp_path)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"


def test_redis_profiles_without_redis_fails_fast_saying_so(tmp_path: Path) -> None:
    """`redis_profiles.py --check` with no Redis there stops at once, naming the URL."""
    url = f"redis://ada:pw-s3cret@127.0.0.1:{free_port()}/0"
    started = time.monotonic()
    result = run_example(EXAMPLES / "redis_profiles.py", example_env(REDIS_URL=url), tmp_path, 30)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert time.monotonic() - started < 15
    assert f"Redis is unreachable at redis://ada:***@127.0.0.1:{url.rsplit(':', 1)[1]}" in output
    assert "pw-s3cret" not in output
    assert "Traceback" not in output
    assert "ExceptionGroup" not in output


def tables_of(postgres_url: str) -> set[str]:
    """The tables in the public schema of the database at *postgres_url*."""
    url = postgres_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    query = "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
    listing = subprocess.run(
        ["psql", url, "-Atc", query], capture_output=True, text=True, check=True
    ).stdout
    return set(listing.split())


@pytest.mark.postgres
@pytest.mark.parametrize(
    "name", ["post_save_profile.py", "fastapi_app.py", "aiohttp_app.py", "redis_profiles.py"]
)
def test_an_example_runs_twice_on_one_postgresql_database_and_names_its_tables(
    name: str, postgres_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A second run on the same PostgreSQL succeeds too; the output names every table made."""
    extra = redis_env(request) if name in NEEDS_REDIS else {}
    env = example_env(DATABASE_URL=postgres_url, **extra)
    for run in (1, 2):
        result = run_example(EXAMPLES / name, env, tmp_path)
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"run {run}:\n{output}"
        assert "IntegrityError" not in output
    tables = tables_of(postgres_url)
    assert tables
    for table in tables:
        assert table in output, f"{table} is not named in:\n{output}"
