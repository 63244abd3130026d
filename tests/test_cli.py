"""The ``aiosignals`` command itself: subcommands, and what it says when an extra is missing."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

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


def aiosignals(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    # The console script, not `python -m`: it does not put the current directory on
    # sys.path by itself.
    script = Path(sys.executable).parent / "aiosignals"
    return subprocess.run(
        [str(script), *argv], capture_output=True, text=True, timeout=60, check=False, cwd=cwd
    )


@pytest.mark.parametrize("command", [["relay"], ["outbox", "list"]])
def test_a_bad_database_url_is_one_clear_line(command: list[str]) -> None:
    result = aiosignals(*command, "--db", "nonsense")
    assert result.returncode == 2
    assert "Could not parse SQLAlchemy URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_postgresql_url_without_a_driver_says_to_use_asyncpg() -> None:
    result = aiosignals("outbox", "list", "--db", "postgresql://user@127.0.0.1:1/app")
    assert result.returncode == 2
    assert "postgresql+asyncpg://" in result.stderr


def test_outbox_list_does_not_create_a_database_for_a_misspelt_path(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    result = aiosignals("outbox", "list", "--db", f"sqlite+aiosqlite:///{missing}")
    assert result.returncode == 2
    assert "no SQLite database" in result.stderr
    assert not missing.exists()


def test_outbox_list_on_a_database_without_the_outbox_says_so(tmp_path: Path) -> None:
    sqlite3.connect(tmp_path / "app.db").close()
    result = aiosignals("outbox", "list", "--db", f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    assert result.returncode == 2
    assert "has no outbox table" in result.stderr


def test_relay_app_modules_are_found_in_the_current_directory(tmp_path: Path) -> None:
    (tmp_path / "myreceivers.py").write_text(
        "import pathlib\npathlib.Path('imported').write_text('yes')\n"
    )
    relay = subprocess.Popen(
        [str(Path(sys.executable).parent / "aiosignals"), "relay",
         "--db", f"sqlite+aiosqlite:///{tmp_path / 'app.db'}", "--app", "myreceivers"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert relay.stderr is not None
        # The relay logs this once its signal handlers are in place: SIGTERM is safe then.
        for line in relay.stderr:
            if "delivering from" in line:
                break
        assert (tmp_path / "imported").read_text() == "yes"
        relay.send_signal(signal.SIGTERM)
        _, stderr = relay.communicate(timeout=20)
    finally:
        if relay.poll() is None:
            relay.kill()
            relay.communicate()
    assert relay.returncode == 0, stderr


def test_a_closed_pipe_ends_the_output_quietly() -> None:
    """`aiosignals inspect mod | head`: the reader goes away, the command stops quietly."""
    code = (
        "import io, os, sys\n"
        "class Closed(io.TextIOBase):\n"
        "    def write(self, text): raise BrokenPipeError(32, 'Broken pipe')\n"
        "    def fileno(self): return os.open(os.devnull, os.O_WRONLY)\n"
        "sys.stdout = Closed()\n"
        "from aiosignals._cli import main\n"
        "sys.exit(main(['inspect', 'tests.inspect_target']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).parent.parent,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
