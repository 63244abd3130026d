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

# name -> (help, module with add_arguments() and run())
_COMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "run the seed scenario: users saved on SQLite, profiles made by post_save",
        "aiosignals._demo",
    ),
    "relay": (
        "deliver durable receivers' outbox rows until SIGINT/SIGTERM",
        "aiosignals.outbox._cli",
    ),
    "outbox": ("list, retry or purge outbox rows", "aiosignals.outbox._cli_rows"),
    "consume": (
        "consume signals from Redis Streams until SIGINT/SIGTERM",
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
            module = importlib.import_module(module_name)
        except ImportError:
            # The command's module is missing (not written yet, or its extra is not
            # installed in a way that breaks even the argument list): it reports at run.
            continue
        module.add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the ``aiosignals`` command with *argv* (default: ``sys.argv[1:]``).

    :return: the process exit status
    """
    args = _parser().parse_args(argv)
    try:
        module = importlib.import_module(args._module)
    except ImportError as exc:
        print(f"aiosignals {args.command}: {exc}", file=sys.stderr)
        return 2
    status: int = module.run(args)
    return status
