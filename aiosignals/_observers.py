"""
Observing sends: the hooks that OpenTelemetry tracing and :mod:`aiosignals.testing` use.

:meth:`Signal.send <aiosignals.Signal.send>` tests one module global, :data:`observers`,
per send. While it is empty (no ``instrument()``, no open ``capture()`` or process-wide
mute) that test is all a send pays. Once an observer is registered, sends take the
general path of the core (same semantics, no inline shortcuts), where each observer sees
the send and, if it asks to, each receiver call.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Generator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, cast

from ._options import ANY

if TYPE_CHECKING:
    from ._event import Event
    from ._signal import Signal

__all__ = [
    "Observer",
    "add_observer",
    "calling",
    "describe",
    "mutes",
    "observed",
    "observers",
    "qualified",
    "remove_observer",
    "sending",
    "signal_label",
    "wraps_receivers",
]

_NULL: AbstractContextManager[None] = nullcontext()

observers: tuple[Observer, ...] = ()
"""The registered observers; empty unless tracing or a test hook is on."""

wraps_receivers: bool = False
"""Whether any observer wraps each receiver call (tracing does, capture does not)."""


class Observer:
    """
    Something that watches sends; the base class does nothing, subclasses override.

    :attr:`wraps_receivers` must be set before the observer is registered.
    """

    wraps_receivers: bool = False
    """Whether :meth:`calling` is entered around each receiver call."""

    def mutes(self, signal: Signal[Any]) -> bool:
        """Return whether a send of *signal* should reach no receiver at all."""
        return False

    def sending(
        self, signal: Signal[Any], sender: Any, payload: Event, receivers: int
    ) -> AbstractContextManager[object]:
        """
        Return a context manager entered around one send, before any receiver runs.

        :param receivers: how many receivers the send reaches (deferred ones included)
        """
        return _NULL

    def calling(
        self, signal: Signal[Any], receiver: Callable[..., Any]
    ) -> AbstractContextManager[object]:
        """Return a context manager entered around one receiver call."""
        return _NULL


def _refresh(updated: tuple[Observer, ...]) -> None:
    global observers, wraps_receivers
    # Assigned last and whole: a send reads a consistent tuple without locking.
    wraps_receivers = any(observer.wraps_receivers for observer in updated)
    observers = updated


def add_observer(observer: Observer) -> None:
    """Register *observer*; registering it twice does nothing."""
    if observer not in observers:
        _refresh((*observers, observer))


def remove_observer(observer: Observer) -> None:
    """Unregister *observer*; an unregistered one is ignored."""
    _refresh(tuple(each for each in observers if each is not observer))


def observed() -> bool:
    """
    Return whether any observer watches sends now (tracing, ``aiosignals.testing``).

    For senders that skip building a payload nobody would see (the instrumented sessions'
    flushes): a send with no receiver is still reported to observers.
    """
    return bool(observers)


def mutes(signal: Signal[Any]) -> bool:
    """Return whether an observer mutes *signal* in every task (``aiosignals.testing``)."""
    return any(observer.mutes(signal) for observer in observers)


@contextmanager
def sending(signal: Signal[Any], sender: Any, payload: Event, receivers: int) -> Generator[None]:
    """Enter the context manager of every observer around one send, nested."""
    with ExitStack() as stack:
        for observer in observers:
            stack.enter_context(observer.sending(signal, sender, payload, receivers))
        yield


def calling(signal: Signal[Any], receiver: Callable[..., Any]) -> AbstractContextManager[object]:
    """Return the context manager of every observer that wraps receiver calls, nested."""
    wrapping = [observer for observer in observers if observer.wraps_receivers]
    if len(wrapping) == 1:
        return wrapping[0].calling(signal, receiver)
    stack = ExitStack()
    for observer in wrapping:
        stack.enter_context(observer.calling(signal, receiver))
    return stack


# -- names for humans and for span attributes ------------------------------------------------


def qualified(obj: Any) -> str:
    """Return ``module.qualname`` of *obj*, or its ``repr`` if it has no name."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if qualname is None:
        return repr(obj)
    return f"{module}.{qualname}" if module and module != "builtins" else str(qualname)


def describe(obj: Any) -> str:
    """
    Return a short, stable description of a sender or receiver.

    Classes, functions, methods and modules are named by their qualified name; ``ANY``,
    ``None``, strings and numbers by their ``repr``; any other object by its type only,
    as ``<module.Type object>``, so that a span or a listing never carries an entity's data.
    """
    if obj is ANY or obj is None or isinstance(obj, str | int | float | bool):
        return repr(obj)
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    if isinstance(obj, types.MethodType):
        return qualified(obj.__func__)
    if isinstance(obj, functools.partial):
        return f"functools.partial({describe(cast('functools.partial[Any]', obj).func)})"  # type: ignore[redundant-cast]
    if isinstance(obj, type | types.FunctionType | types.BuiltinFunctionType):
        return qualified(obj)
    return f"<{qualified(type(obj))} object>"


def signal_label(signal: Signal[Any]) -> str:
    """Return the signal's name, or its payload type's name when it has none."""
    return signal.name or signal.payload_type.__qualname__
