"""
``aiosignals inspect module[:attribute]``: list the signals of a module and their receivers.

Importing the module runs its ``@receiver`` decorators, so the listing shows what a
process that imports it would have connected; receivers connected by modules it does not
import are not there. The current directory is importable, as with ``python -m``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from ._imports import SignalImportError, import_signals
from ._observers import describe

if TYPE_CHECKING:
    from ._signal import Signal

__all__ = ["add_arguments", "collect", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``inspect`` arguments to *parser*."""
    parser.add_argument(
        "target",
        metavar="MODULE[:ATTRIBUTE]",
        help="a module to import, e.g. myapp.signals, or one signal in it: myapp.signals:saved",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _describe_signal(attribute: str, signal: Signal[Any]) -> dict[str, Any]:
    receivers: list[dict[str, Any]] = [
        {
            "receiver": describe(connection.receiver),
            "sender": describe(connection.sender),
            "priority": connection.priority,
            "phase": connection.phase.value,
            "durable": connection.durable,
            "once": connection.once,
            "weak": connection.weak,
            "thread": connection.thread,
            "timeout": connection.timeout,
            "dispatch_uid": connection.dispatch_uid,
            "errors": connection.errors,
        }
        for connection in signal.connections
    ]
    return {
        "name": signal.name,
        "attribute": attribute,
        "payload_type": describe(signal.payload_type),
        "mode": repr(signal.mode),
        "errors": signal.errors,
        "timeout": signal.timeout,
        "max_depth": signal.max_depth,
        "receivers": receivers,
    }


def collect(target: str) -> dict[str, Any]:
    """
    Import the module of *target* and describe its signals, as ``--json`` prints them.

    :param target: ``module`` or ``module:attribute``
    :raises ~aiosignals._imports.SignalImportError: if the module does not import or the
        attribute is not a signal
    """
    found = import_signals(target)
    return {
        "module": found.module,
        "signals": [_describe_signal(attribute, signal) for attribute, signal in found.signals],
    }


_COLUMNS = (
    ("RECEIVER", "receiver"),
    ("SENDER", "sender"),
    ("PRIORITY", "priority"),
    ("PHASE", "phase"),
    ("DURABLE", "durable"),
    ("ONCE", "once"),
    ("WEAK", "weak"),
)


def _cell(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _table(report: dict[str, Any]) -> str:
    if not report["signals"]:
        return f"no signals in {report['module']}"
    blocks: list[str] = []
    for signal in report["signals"]:
        title = signal["name"] or signal["attribute"]
        if signal["name"] and signal["name"] != signal["attribute"]:
            title += f" (attribute {signal['attribute']})"
        timeout = "none" if signal["timeout"] is None else f"{signal['timeout']}s"
        lines = [
            f"{title}: {signal['payload_type']}",
            (
                f"  mode {signal['mode']}, errors {signal['errors']}, timeout {timeout},"
                f" max_depth {signal['max_depth']}"
            ),
        ]
        if not signal["receivers"]:
            lines.append("  no receivers")
        else:
            rows = [[header for header, _ in _COLUMNS]]
            rows.extend(
                [_cell(receiver[key]) for _, key in _COLUMNS] for receiver in signal["receivers"]
            )
            widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
            lines.extend(
                "  "
                + "  ".join(
                    cell.ljust(width) for cell, width in zip(row, widths, strict=True)
                ).rstrip()
                for row in rows
            )
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def run(args: argparse.Namespace) -> int:
    """Print the signals of ``args.target``; return the exit status (2 on a bad target)."""
    try:
        report = collect(args.target)
    except SignalImportError as exc:
        print(f"aiosignals inspect: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(_table(report))
    return 0
