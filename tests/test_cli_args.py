"""The argument types of the ``aiosignals`` command, and how it shows URLs."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from aiosignals._cli_args import existing_database_url, hide_passwords, redis_url


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("postgresql+asyncpg://ada:pw@db:5432/app", "postgresql+asyncpg://ada:***@db:5432/app"),
        ("redis://:pw@localhost:6379/0", "redis://:***@localhost:6379/0"),
        ("rediss://ada:p%40ss@h/0 and redis://bob:x@h2/1", "rediss://ada:***@h/0 and redis://bob:***@h2/1"),
        ("postgresql+asyncpg://ada@db/app", "postgresql+asyncpg://ada@db/app"),
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("'sqlite+aiosqlite:///a:b@c.db'", "'sqlite+aiosqlite:///a:b@c.db'"),
    ],
)  # fmt: skip
def test_hide_passwords_masks_the_password_of_every_url_and_nothing_else(
    text: str, shown: str
) -> None:
    """Only the password part of a URL becomes ***: hosts, ports and paths stay readable."""
    assert hide_passwords(text) == shown


@pytest.mark.parametrize(
    "url",
    ["redis://localhost:6379/0", "rediss://h", "unix:///run/redis.sock", "redis://:pw@h:1/2"],
)
def test_redis_url_accepts_the_schemes_redis_py_knows(url: str) -> None:
    """redis://, rediss:// and unix:// pass unchanged."""
    assert redis_url(url) == url


def test_existing_database_url_accepts_memory_and_existing_files(tmp_path: Path) -> None:
    """In-memory SQLite, other databases and an existing file pass; a missing file does not."""
    (tmp_path / "app.db").touch()
    for url in (
        "sqlite+aiosqlite://",
        "sqlite+aiosqlite:///:memory:",
        f"sqlite+aiosqlite:///{tmp_path / 'app.db'}",
        "postgresql+asyncpg://ada@db/app",
    ):
        assert existing_database_url(url) == url
    with pytest.raises(argparse.ArgumentTypeError, match="no SQLite database"):
        existing_database_url(f"sqlite+aiosqlite:///{tmp_path / 'typo.db'}")
