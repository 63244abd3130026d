"""
The ``aiosignals`` command.

Each subcommand lives with the feature it drives and is imported only when it runs, so
``aiosignals --help`` needs none of the optional extras. A subcommand module (or the
object named after its ``:``) provides ``add_arguments(parser)`` (cheap, no optional
imports) and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from ._cli_args import hide_passwords

__all__ = ["main"]

# name -> (help, "module" or "module:object" with add_arguments() and run())
_COMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "run the seed scenario: users saved on SQLite, profiles made by post_save",
        "aiosignals._demo",
    ),
    "relay": (
        "deliver durable receivers' outbox rows until SIGINT/SIGTERM",
        "aiosignals.outbox._cli:relay_command",
    ),
    "outbox": (
        "list, show, retry or purge outbox rows",
        "aiosignals.outbox._cli:outbox_command",
    ),
    "consume": (
        "consume signals from Redis Streams or a FastStream broker until SIGINT/SIGTERM",
        "aiosignals.transports._cli",
    ),
    "inspect": ("list the signals of a module and their receivers", "aiosignals._inspect"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aiosignals", description="Typed async signals with post_save semantics."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, module_name) in _COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(_module=module_name)
        try:
            module = _command(module_name)
        except ImportError:
            # The command needs an extra that is not installed: main() says which,
            # whatever the arguments, rather than "unrecognized arguments".
            sub.set_defaults(_missing=True)
            continue
        module.add_arguments(sub)
    return parser


def _command(spec: str) -> Any:
    """Return the module, or the object in it, that *spec* (``module[:object]``) names."""
    module_name, _, attribute = spec.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attribute) if attribute else module


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the ``aiosignals`` command with *argv* (default: ``sys.argv[1:]``).

    :return: the process exit status
    """
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "_missing", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        # The ``aiosignals`` script puts its own directory on sys.path, not the current
        # one, as ``python -m aiosignals`` does: --app and inspect find the user's modules
        # either way.
        sys.path.insert(0, os.getcwd())
    try:
        status: int = _command(args._module).run(args)
    except ImportError as exc:
        message = f"aiosignals {args.command}: {exc}{_install_hint(exc)}"
        print(hide_passwords(message), file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`aiosignals inspect mod | head`): stop quietly, as cat
        # does; pointing stdout at devnull keeps the interpreter's final flush quiet too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:
        # A database or Redis that cannot be reached, a malformed URL: one clear line
        # instead of a traceback. Anything else is a bug and keeps its traceback.
        if not isinstance(exc, OSError) and not type(exc).__module__.startswith(
            ("sqlalchemy", "redis", "asyncpg")
        ):
            raise
        # A driver's message may quote the URL it was given: never with its password.
        message = f"aiosignals {args.command}: {type(exc).__name__}: {exc}"
        print(hide_passwords(message), file=sys.stderr)
        return 2
    return status


# The module a missing import names -> the extra that installs it.
_EXTRAS = {
    "sqlalchemy": "sqlalchemy",
    "aiosqlite": "sqlalchemy",
    "greenlet": "sqlalchemy",
    "asyncpg": "postgres",
    "redis": "redis",
}


def _install_hint(exc: ImportError) -> str:
    if "pip install" in str(exc):
        return ""
    top = (exc.name or "").partition(".")[0]
    if top in ("psycopg2", "psycopg"):
        return "; aiosignals uses asyncpg: write the URL as postgresql+asyncpg://..."
    extra = _EXTRAS.get(top)
    return f'; install it with: pip install "aiosignals[{extra}]"' if extra else ""
