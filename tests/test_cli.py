"""The ``aiosignals`` command itself: subcommands, and what it says when an extra is missing."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from aiosignals._cli import main


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
    """A command whose extra is missing exits 2 naming the extra, not as unrecognized arguments."""
    result = run_without(missing, *argv)
    assert result.returncode == 2
    assert extra in result.stderr
    assert "unrecognized arguments" not in result.stderr


def test_help_lists_every_command() -> None:
    """`aiosignals --help` names every subcommand."""
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
    """A --db that is no URL is refused while parsing, with an example of one."""
    result = aiosignals(*command, "--db", "nonsense")
    assert result.returncode == 2
    assert "argument --db: expected an SQLAlchemy URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_postgresql_url_without_a_driver_says_to_use_asyncpg() -> None:
    """A postgresql:// URL without a driver exits 2 and suggests postgresql+asyncpg://."""
    result = aiosignals("outbox", "list", "--db", "postgresql://user@127.0.0.1:1/app")
    assert result.returncode == 2
    assert "postgresql+asyncpg://" in result.stderr


def test_outbox_list_does_not_create_a_database_for_a_misspelt_path(tmp_path: Path) -> None:
    """`outbox list` on a SQLite path that does not exist exits 2 and creates no file."""
    missing = tmp_path / "typo.db"
    result = aiosignals("outbox", "list", "--db", f"sqlite+aiosqlite:///{missing}")
    assert result.returncode == 2
    assert "no SQLite database" in result.stderr
    assert not missing.exists()


def test_outbox_list_on_a_database_without_the_outbox_says_so(tmp_path: Path) -> None:
    """`outbox list` on a database without the outbox table exits 2 and says so."""
    sqlite3.connect(tmp_path / "app.db").close()
    result = aiosignals("outbox", "list", "--db", f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    assert result.returncode == 2
    assert "has no outbox table" in result.stderr


def test_relay_app_modules_are_found_in_the_current_directory(tmp_path: Path) -> None:
    """The installed `aiosignals relay` imports --app modules from the current directory."""
    (tmp_path / "myreceivers.py").write_text(
        "import pathlib\npathlib.Path('imported').write_text('yes')\n"
    )
    sqlite3.connect(tmp_path / "app.db").close()
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


SQLITE = "sqlite+aiosqlite://"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["relay", "--db", SQLITE, "--batch-size", "0"], "--batch-size: must be at least 1"),
        (["relay", "--db", SQLITE, "--batch-size", "ten"], "--batch-size: expected a whole"),
        (["relay", "--db", SQLITE, "--max-attempts", "-1"], "--max-attempts: must be at least 1"),
        (["relay", "--db", SQLITE, "--lease", "0"], "--lease: must be more than 0 seconds"),
        (["relay", "--db", SQLITE, "--lease", "nan"], "--lease: must be a finite number"),
        (["relay", "--db", SQLITE, "--lease", "soon"], "--lease: expected a number of seconds"),
        (["relay", "--db", SQLITE, "--poll-interval", "-1"], "--poll-interval: must be more"),
        (["relay", "--db", SQLITE, "--poll-interval", "inf"], "--poll-interval: must be a finite"),
        (["relay", "--db", SQLITE, "--backoff", "-1"], "--backoff: must be 0 seconds or more"),
        (["relay", "--db", SQLITE, "--app", ""], "--app: must not be empty"),
        (["relay", "--db", SQLITE, "--db-name", " "], "--db-name: must not be empty"),
        (["relay", "--db", "nonsense"], "--db: expected an SQLAlchemy URL"),
        (["consume", "--redis", "redis://x", "--app", "m", "--count", "0"], "--count: must be"),
        (
            ["consume", "--redis", "redis://x", "--app", "m", "--max-deliveries", "0"],
            "--max-deliveries: must be at least 1",
        ),
        (["consume", "--redis", "redis://x", "--app", "m", "--claim-idle", "0"], "--claim-idle"),
        (
            ["consume", "--redis", "redis://x", "--app", "m", "--claim-idle", "nan"],
            "--claim-idle: must be a finite number",
        ),
        (["consume", "--redis", "notaurl", "--app", "m"], "--redis: expected a Redis URL"),
        (["consume", "--redis", "redis://h:port/0", "--app", "m"], "--redis: expected a Redis"),
        (["consume", "--redis", "redis://x", "--app", "m", "--group", " "], "--group: must not"),
        (["outbox", "retry", "--db", SQLITE, "--id", "0"], "--id: must be at least 1"),
        (["outbox", "show", "--db", SQLITE, "x"], "expected a whole number"),
        (["demo", "--db", "nonsense"], "--db: expected an SQLAlchemy URL"),
    ],
)
def test_a_bad_option_value_is_refused_with_one_line_and_status_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every option is checked while parsing: exit 2, the option and the reason on stderr."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_a_bad_value_is_refused_by_the_command_itself() -> None:
    """The installed command refuses a bad value the same way, before touching a database."""
    result = aiosignals("relay", "--db", SQLITE, "--lease", "nan")
    assert result.returncode == 2
    assert "argument --lease: must be a finite number of seconds, got 'nan'" in result.stderr
    assert "Traceback" not in result.stderr


def test_relay_does_not_create_a_database_for_a_misspelt_path(tmp_path: Path) -> None:
    """`relay` on a SQLite path that does not exist refuses it and creates no file."""
    missing = tmp_path / "typo.db"
    result = aiosignals("relay", "--db", f"sqlite+aiosqlite:///{missing}")
    assert result.returncode == 2
    assert f"no SQLite database at {str(missing)!r}" in result.stderr
    assert not missing.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--db", "postgresql+asyncpg://ada:s3cr3t-pw@127.0.0.1:1/app"],
        ["outbox", "list", "--db", "postgresql+asyncpg://ada:s3cr3t-pw@127.0.0.1:1/app"],
        ["relay", "--db", "postgresql+asyncpg://ada:s3cr3t-pw@127.0.0.1:1/app"],
        ["consume", "--redis", "redis://ada:s3cr3t-pw@127.0.0.1:1/0", "--app", "json:nothing"],
        ["consume", "--redis", "redis://ada:s3cr3t-pw@127.0.0.1:notaport/0", "--app", "m"],
        ["demo", "--db", "nonsense://ada:s3cr3t-pw@?"],
    ],
)
def test_a_password_in_a_url_is_never_printed(argv: list[str]) -> None:
    """Whatever fails, what the command prints names the server but not its password."""
    result = aiosignals(*argv)
    assert result.returncode != 0
    assert "s3cr3t-pw" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_a_database_error_shows_the_statement_but_never_its_parameters(tmp_path: Path) -> None:
    """The engine a Database creates hides parameters: a payload never reaches an error log."""
    import anyio
    import sqlalchemy as sa

    from aiosignals.repository.sqlalchemy import Database

    async def fail() -> str:
        async with Database(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}") as db:
            try:
                async with db.engine.begin() as connection:
                    await connection.execute(
                        sa.text("INSERT INTO missing (payload) VALUES (:payload)"),
                        {"payload": '{"email": "ada@personal.example"}'},
                    )
            except sa.exc.OperationalError as exc:
                return str(exc)
        raise AssertionError("the statement did not fail")

    message = anyio.run(fail)
    assert "INSERT INTO missing" in message
    assert "ada@personal.example" not in message


@pytest.mark.postgres
def test_a_running_relay_never_logs_the_password_of_its_database(postgres_url: str) -> None:
    """The relay names its database in its log without the password (trust auth ignores it)."""
    url = postgres_url.replace(
        "postgresql+asyncpg://postgres@", "postgresql+asyncpg://postgres:s3cr3t-pw@"
    )
    assert "s3cr3t-pw" in url
    relay = subprocess.Popen(
        [str(Path(sys.executable).parent / "aiosignals"), "relay", "--db", url],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert relay.stderr is not None
        seen = []
        for line in relay.stderr:
            seen.append(line)
            if "delivering from" in line:
                break
        relay.send_signal(signal.SIGTERM)
        _, rest = relay.communicate(timeout=20)
    finally:
        if relay.poll() is None:
            relay.kill()
            relay.communicate()
    output = "".join(seen) + rest
    assert relay.returncode == 0, output
    assert "postgres:***@" in output
    assert "s3cr3t-pw" not in output
