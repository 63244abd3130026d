"""``aiosignals demo``: the main job of the README, run as a user runs it."""

from __future__ import annotations

import subprocess
import sys

import pytest


def demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiosignals", "demo", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_demo_runs_the_seed_scenario_on_embedded_sqlite() -> None:
    """`aiosignals demo` on SQLite profiles each committed user and not the rolled-back one."""
    result = demo()
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "log_user_creation (alice@example.com created)" in out
    assert out.count("create_user_profile, after commit (profile created)") == 4
    added = out.split("add dave@example.com with session.add()")[1].split("- rename dave")[0]
    assert "log_user_creation (dave@example.com created)" in added
    assert "create_user_profile, after commit (profile created)" in added
    assert "dave@example.com updated, ['name'] were {'name': ''}" in out
    rolled_back = out.split("add mallory@example.com, then the transaction rolls back")[1]
    assert "create_user_profile" not in rolled_back.split("Summary")[0]
    assert "Summary: 4 users, 4 profiles" in out


@pytest.mark.postgres
def test_demo_runs_on_postgresql(postgres_url: str) -> None:
    """`aiosignals demo --db` on PostgreSQL runs the same scenario to the same summary."""
    result = demo("--db", postgres_url)
    assert result.returncode == 0, result.stderr
    assert "Summary: 4 users, 4 profiles" in result.stdout


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "argument --db: expected an SQLAlchemy URL"),
        ("sqlite+aiosqlite:///no/such/directory/demo.db", "of the SQLite database does not exist"),
    ],
)
def test_a_bad_database_url_is_a_clear_error_not_a_traceback(url: str, message: str) -> None:
    """`aiosignals demo` with a bad --db exits 2 with a one-line reason and no traceback."""
    result = demo("--db", url)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
