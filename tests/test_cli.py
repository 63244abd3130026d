"""The ``aiosignals`` command itself: subcommands, and what it says when an extra is missing."""

from __future__ import annotations

import subprocess
import sys

import pytest


def run_without(module: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run the command in a process where importing *module* fails, as without its extra."""
    code = (
        f"import sys; sys.modules[{module!r}] = None\n"
        "from aiosignals._cli import main\n"
        f"sys.exit(main({list(argv)!r}))"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    ("missing", "argv", "extra"),
    [
        ("redis", ["consume", "--redis", "redis://x", "--app", "m"], "aiosignals[redis]"),
        ("sqlalchemy", ["relay", "--db", "sqlite+aiosqlite://"], "aiosignals[sqlalchemy]"),
        ("sqlalchemy", ["demo"], "aiosignals[sqlalchemy]"),
    ],
)
def test_a_missing_extra_is_named_not_reported_as_bad_arguments(
    missing: str, argv: list[str], extra: str
) -> None:
    result = run_without(missing, *argv)
    assert result.returncode == 2
    assert extra in result.stderr
    assert "unrecognized arguments" not in result.stderr


def test_help_lists_every_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "aiosignals", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    for command in ("demo", "relay", "outbox", "consume", "inspect"):
        assert command in result.stdout
