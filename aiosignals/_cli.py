"""
The ``aiosignals`` command.

Each subcommand lives with the feature it drives and is imported only when it runs, so
``aiosignals --help`` needs none of the optional extras. A subcommand module provides
``add_arguments(parser)`` (cheap, no optional imports) and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["main"]

# name -> (help, module with add_arguments() and run(), the extra it needs)
_COMMANDS: dict[str, tuple[str, str, str | None]] = {
    "demo": (
        "run the seed scenario: users saved on SQLite, profiles made by post_save",
        "aiosignals._demo",
        "sqlalchemy",
    ),
    "relay": (
        "deliver durable receivers' outbox rows until SIGINT/SIGTERM",
        "aiosignals.outbox._cli",
        "sqlalchemy",
    ),
    "outbox": ("list, retry or purge outbox rows", "aiosignals.outbox._cli_rows", "sqlalchemy"),
    "consume": (
        "consume signals from Redis Streams until SIGINT/SIGTERM",
        "aiosignals.transports._cli",
        "redis",
    ),
    "inspect": ("list the signals of a module and their receivers", "aiosignals._inspect", None),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aiosignals", description="Typed async signals with post_save semantics."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, module_name, _) in _COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(_module=module_name)
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            # The command needs an extra that is not installed: main() says which,
            # whatever the arguments, rather than "unrecognized arguments".
            sub.set_defaults(_missing=True)
            continue
        module.add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the ``aiosignals`` command with *argv* (default: ``sys.argv[1:]``).

    :return: the process exit status
    """
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "_missing", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    extra = _COMMANDS[args.command][2]
    try:
        module = importlib.import_module(args._module)
        status: int = module.run(args)
    except ImportError as exc:
        hint = f'; install it with: pip install "aiosignals[{extra}]"' if extra else ""
        print(f"aiosignals {args.command}: {exc}{hint}", file=sys.stderr)
        return 2
    return status
