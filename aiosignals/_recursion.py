"""
The recursion guard of sends, and the naming of a send loop's receivers for its error.

A signal counts, per task, how deeply its sends nest in its own receivers
(:func:`deeper`, :func:`back`). Once the guard has tripped, :func:`receivers_on_stack`
may be slow: it walks the frames of the current task, finds the signals whose sends are
under way in it, and lists which of their receivers are on the stack, outermost first.
"""

from __future__ import annotations

import functools
import inspect
import types
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any

from .exceptions import RecursionDepthError

if TYPE_CHECKING:
    from ._signal import Signal

__all__ = ["back", "deeper", "receivers_on_stack"]

# How deeply each signal's sends (by id) are nested in the current task.
_send_depth: ContextVar[dict[int, int]] = ContextVar("aiosignals_send_depth", default={})  # noqa: B039 -- never mutated, replaced


def deeper(signal: Signal[Any]) -> Token[dict[int, int]]:
    """
    Count one more level of sends of *signal* in the current task; return the undo token.

    :raises ~aiosignals.RecursionDepthError: if that reaches the signal's ``max_depth``
    """
    depths = _send_depth.get()
    depth = depths.get(id(signal), 0) + 1
    if depth >= signal.max_depth:
        loop = receivers_on_stack(type(signal))
        raise RecursionDepthError(
            f"{signal!r} was sent {depth + 1} levels deep inside its own receivers"
            f" (max_depth={signal.max_depth})"
            + (f"; the receivers of the loop: {', '.join(loop)}" if loop else "")
        )
    return _send_depth.set({**depths, id(signal): depth})


def back(token: Token[dict[int, int]]) -> None:
    """Undo a :func:`deeper` once its send is over."""
    _send_depth.reset(token)


def _code_of(fn: object) -> types.CodeType | None:
    while isinstance(fn, functools.partial):
        fn = fn.func  # pyright: ignore[reportUnknownMemberType]
    if isinstance(fn, types.MethodType):
        fn = fn.__func__
    fn = inspect.unwrap(fn) if callable(fn) else fn  # pyright: ignore[reportUnknownArgumentType]
    code = getattr(fn, "__code__", None)
    if code is None:
        # A callable object: its class's __call__.
        code = getattr(getattr(type(fn), "__call__", None), "__code__", None)  # noqa: B004 -- the class attribute
    return code if isinstance(code, types.CodeType) else None


def _name_of(fn: object) -> str:
    module = getattr(fn, "__module__", None)
    name = getattr(fn, "__qualname__", None) or repr(fn)
    return f"{module}.{name}" if module else name


def receivers_on_stack(signal_class: type[Any]) -> list[str]:
    """
    Return the names of the receivers on the current stack, outermost first, each once.

    :param signal_class: :class:`~aiosignals.Signal`; a frame whose ``self`` is one of its
        instances is a send under way, and its receivers are those looked for
    """
    frames: list[types.FrameType] = []
    here = inspect.currentframe()
    frame = None if here is None else here.f_back
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    codes: dict[types.CodeType, str] = {}
    seen_signals: set[int] = set()
    for each in frames:
        candidate: Any = each.f_locals.get("self")
        if isinstance(candidate, signal_class) and id(candidate) not in seen_signals:
            seen_signals.add(id(candidate))
            for connection in candidate.connections:
                code = _code_of(connection.receiver)
                if code is not None:
                    codes.setdefault(code, _name_of(connection.receiver))
    names: list[str] = []
    for each in reversed(frames):
        name = codes.get(each.f_code)
        if name is not None and name not in names:
            names.append(name)
    return names
