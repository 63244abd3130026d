"""
``module`` or ``module:attribute`` to signals: what ``aiosignals inspect`` and ``consume`` take.

Importing the module runs its ``@receiver`` decorators, so the signals come with the
receivers a process that imports it would have connected.
"""

from __future__ import annotations

import dataclasses
import importlib
import types
from typing import Any, TypeGuard

from ._signal import Signal

__all__ = ["ImportedSignals", "SignalImportError", "import_signals"]


class SignalImportError(Exception):
    """What went wrong importing a ``module[:attribute]`` spec, worded for the command line."""


@dataclasses.dataclass(frozen=True, slots=True)
class ImportedSignals:
    """The signals a spec names, each with the attribute it was found under."""

    module: str
    """The module imported."""
    signals: list[tuple[str, Signal[Any]]]
    """(attribute, signal) pairs, in the module's or the list's order, each signal once."""
    whole_module: bool
    """Whether the spec named a module (every signal in it) rather than signals."""


def _is_signal(value: object) -> TypeGuard[Signal[Any]]:
    return isinstance(value, Signal)


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _import(module_name: str) -> types.ModuleType:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (
            module_name == exc.name or module_name.startswith(f"{exc.name}.")
        ):
            raise SignalImportError(f"no module named {module_name!r}") from exc
        raise SignalImportError(f"importing {module_name!r} failed: {_error(exc)}") from exc
    except Exception as exc:
        # Anything the module raises at import (a missing setting, a syntax error...).
        raise SignalImportError(f"importing {module_name!r} failed: {_error(exc)}") from exc


def import_signals(spec: str) -> ImportedSignals:
    """
    Import the module of *spec* and return the signals it names.

    ``module`` (or ``module:attribute`` naming a module) gives every signal in the module's
    namespace, named or not; ``module:attribute`` gives that signal, or the signals of that
    list or tuple.

    :raises SignalImportError: if the spec is malformed, the module does not import, the
        attribute is missing, or it names something other than signals or a module
    """
    module_name, colon, attribute = spec.partition(":")
    if not module_name or (colon and not attribute) or ":" in attribute:
        raise SignalImportError(f"expected MODULE or MODULE:ATTRIBUTE, got {spec!r}")
    target: object = _import(module_name)
    for part in attribute.split(".") if attribute else ():
        try:
            target = getattr(target, part)
        except AttributeError:
            raise SignalImportError(f"{module_name!r} has no attribute {attribute!r}") from None
    found: list[tuple[str, object]]
    if isinstance(target, types.ModuleType):
        namespace: dict[str, object] = vars(target)
        found = [(name, value) for name, value in namespace.items() if _is_signal(value)]
    elif _is_signal(target):
        found = [(attribute, target)]
    elif isinstance(target, list | tuple):
        items: list[object] = list(target)  # pyright: ignore[reportUnknownArgumentType] -- checked below
        found = [(f"{attribute}[{i}]", value) for i, value in enumerate(items)]
    else:
        raise SignalImportError(
            f"{spec} is not a Signal but {type(target).__qualname__}: expected a Signal,"
            " a list of signals or a module"
        )
    signals: list[tuple[str, Signal[Any]]] = []
    seen: set[int] = set()
    for name, value in found:
        if not _is_signal(value):
            raise SignalImportError(f"{spec} holds {value!r}, which is not a Signal")
        # The same signal under two names (an alias, a re-export) counts once.
        if id(value) not in seen:
            seen.add(id(value))
            signals.append((name, value))
    return ImportedSignals(module_name, signals, isinstance(target, types.ModuleType))
