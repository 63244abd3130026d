"""
What the ``aiosignals`` command accepts, and how it shows URLs.

The argument types are argparse ``type=`` converters: a bad value is refused while the
arguments are parsed, with one line naming the option and exit status 2, before anything
connects or runs. They import nothing optional, so ``aiosignals --help`` stays cheap.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "Flag",
    "add_flags",
    "database_url",
    "existing_database_url",
    "flag",
    "given_flags",
    "hide_passwords",
    "non_empty",
    "non_negative_seconds",
    "positive_int",
    "positive_seconds",
    "redis_url",
]

# "scheme://user:password@" -> "scheme://user:***@", wherever a URL appears in a message.
_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)[^@\s/]*@")


def hide_passwords(text: str) -> str:
    """
    Return *text* with the password of every URL in it replaced by ``***``.

    :param text: a URL, or a message that may quote URLs
    :return: the same text, without passwords
    """
    return _PASSWORD.sub(r"\g<head>***@", text)


def positive_int(text: str) -> int:
    """
    Convert a count that must be at least 1.

    :raises argparse.ArgumentTypeError: for anything else
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds, got {text!r}")
    return value


def positive_seconds(text: str) -> float:
    """
    Convert a duration that must be finite and above 0.

    :raises argparse.ArgumentTypeError: for anything else
    """
    value = _seconds(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value


def non_negative_seconds(text: str) -> float:
    """
    Convert a duration that must be finite and not negative (0 means "no wait").

    :raises argparse.ArgumentTypeError: for anything else
    """
    value = _seconds(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 seconds or more, got {text}")
    return value


def non_empty(text: str) -> str:
    """
    Convert a name that must not be empty or blank.

    :raises argparse.ArgumentTypeError: for an empty or blank name
    """
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def redis_url(text: str) -> str:
    """
    Convert a Redis URL: ``redis://``, ``rediss://`` or ``unix://``.

    :raises argparse.ArgumentTypeError: for anything else
    """
    example = "expected a Redis URL such as redis://localhost:6379/0"
    try:
        parts = urlsplit(text)
        port = parts.port  # raises ValueError for a port that is not a number
    except ValueError:
        raise argparse.ArgumentTypeError(f"{example}, got {hide_passwords(text)!r}") from None
    if parts.scheme not in ("redis", "rediss", "unix") or port == 0:
        raise argparse.ArgumentTypeError(f"{example}, got {hide_passwords(text)!r}")
    return text


def database_url(text: str) -> str:
    """
    Convert an SQLAlchemy URL (``dialect[+driver]://...``); SQLAlchemy parses the rest.

    :raises argparse.ArgumentTypeError: for text that is not shaped like one
    """
    if not re.match(r"^[A-Za-z][A-Za-z0-9+_-]*://", text):
        raise argparse.ArgumentTypeError(
            "expected an SQLAlchemy URL such as sqlite+aiosqlite:///app.db or"
            f" postgresql+asyncpg://user@host/db, got {hide_passwords(text)!r}"
        )
    return text


def existing_database_url(text: str) -> str:
    """
    Convert the URL of a database that must exist already: a SQLite file is not created.

    Connecting to a misspelt SQLite path would create an empty database, which looks like
    an empty outbox forever.

    :raises argparse.ArgumentTypeError: for a malformed URL or a missing SQLite file
    """
    url = database_url(text)
    head, _, rest = url.partition("://")
    path, _, query = rest.partition("?")
    if not head.startswith("sqlite") or "mode=memory" in query:
        return url
    # sqlite:///relative.db and sqlite:////absolute.db; sqlite:// alone is in memory.
    path = path.removeprefix("/")
    if path and path != ":memory:" and not Path(path).exists():
        raise argparse.ArgumentTypeError(f"no SQLite database at {str(Path(path))!r}")
    return url


@dataclasses.dataclass(frozen=True, slots=True)
class Flag:
    """How a field of an options dataclass shows on the command line (see :func:`flag`)."""

    help: str
    """The help text; ``{default}`` in it becomes the field's default."""
    metavar: str | None = None
    """What the value is called in the help."""
    type: Callable[[str], Any] | None = None
    """The argparse converter of the value; a ``bool`` field is a ``--x/--no-x`` switch."""


def flag(
    help: str,
    *,
    metavar: str | None = None,
    type: Callable[[str], Any] | None = None,
) -> dict[str, Flag]:
    """
    Return the field metadata that makes a dataclass field a command-line flag.

    :param help: the help text; ``{default}`` in it becomes the field's default
    :param metavar: what the value is called in the help
    :param type: the argparse converter that checks and converts the value
    """
    return {"cli": Flag(help, metavar, type)}


def add_flags(parser: argparse.ArgumentParser, options: type[Any]) -> None:
    """
    Add a ``--field-name`` flag for each field of the dataclass *options* that has a :func:`flag`.

    Each flag defaults to ``None`` (not given), so that the field's own default applies: the
    defaults are written once, in the dataclass. :func:`given_flags` reads them back.
    """
    for field in dataclasses.fields(options):
        spec: Flag | None = field.metadata.get("cli")
        if spec is None:
            continue
        name = f"--{field.name.replace('_', '-')}"
        text = spec.help.format(default=field.default)
        if isinstance(field.default, bool):
            parser.add_argument(name, action=argparse.BooleanOptionalAction, help=text)
        else:
            parser.add_argument(name, type=spec.type or str, metavar=spec.metavar, help=text)


def given_flags(args: argparse.Namespace, options: type[Any]) -> dict[str, Any]:
    """Return the flags of *options* (see :func:`add_flags`) given in *args*, by field name."""
    given: dict[str, Any] = {}
    for field in dataclasses.fields(options):
        value = getattr(args, field.name, None) if "cli" in field.metadata else None
        if value is not None:
            given[field.name] = value
    return given
