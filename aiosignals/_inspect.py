"""
``aiosignals inspect module[:attribute]``: list the signals of a module and their receivers.

Importing the module runs its ``@receiver`` decorators, so the listing shows what a
process that imports it would have connected; receivers connected by modules it does not
import are not there. The current directory is importable, as with ``python -m``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import types
from typing import Any, TypeGuard

from ._observers import describe
from ._signal import Signal

__all__ = ["add_arguments", "collect", "run"]


class InspectError(Exception):
    """What went wrong, worded for the command line."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``inspect`` arguments to *parser*."""
    parser.add_argument(
        "target",
        metavar="MODULE[:ATTRIBUTE]",
        help="a module to import, e.g. myapp.signals, or one signal in it: myapp.signals:saved",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _import(module_name: str) -> types.ModuleType:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (
            module_name == exc.name or module_name.startswith(f"{exc.name}.")
        ):
            raise InspectError(f"no module named {module_name!r}") from exc
        raise InspectError(f"importing {module_name!r} failed: {_error(exc)}") from exc
    except Exception as exc:
        # Anything the module raises at import (a missing setting, a syntax error...).
        raise InspectError(f"importing {module_name!r} failed: {_error(exc)}") from exc


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _is_signal(value: object) -> TypeGuard[Signal[Any]]:
    return isinstance(value, Signal)


def _find(target: str) -> tuple[str, list[tuple[str, Signal[Any]]]]:
    module_name, colon, attribute = target.partition(":")
    if not module_name or (colon and not attribute) or ":" in attribute:
        raise InspectError(f"expected MODULE or MODULE:ATTRIBUTE, got {target!r}")
    module = _import(module_name)
    if attribute:
        value: Any = module
        for part in attribute.split("."):
            try:
                value = getattr(value, part)
            except AttributeError:
                raise InspectError(f"{module_name!r} has no attribute {attribute!r}") from None
        if not _is_signal(value):
            raise InspectError(
                f"{module_name}:{attribute} is not a Signal but {type(value).__qualname__}"
            )
        return module_name, [(attribute, value)]
    found: list[tuple[str, Signal[Any]]] = []
    seen: set[int] = set()
    namespace: dict[str, Any] = vars(module)
    for name, value in namespace.items():
        # The same signal under two names (an alias, a re-export) is listed once.
        if _is_signal(value) and id(value) not in seen:
            seen.add(id(value))
            found.append((name, value))
    return module_name, found


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
    :raises InspectError: if the module does not import or the attribute is not a signal
    """
    module_name, signals = _find(target)
    return {
        "module": module_name,
        "signals": [_describe_signal(attribute, signal) for attribute, signal in signals],
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
    except InspectError as exc:
        print(f"aiosignals inspect: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(_table(report))
    return 0
