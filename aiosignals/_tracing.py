"""
Observing sends: the hooks behind OpenTelemetry tracing and :mod:`aiosignals.testing`.

:meth:`Signal.send <aiosignals.Signal.send>` tests one module global, :data:`observers`,
per send. While it is empty (no :func:`instrument`, no open ``capture()`` or process-wide
mute) that test is all a send pays: this module imports nothing of OpenTelemetry until
:func:`instrument` is called. Once an observer is registered, sends take the general path
of the core (same semantics, no inline shortcuts), where each observer sees the send and,
if it asks to, each receiver call.
"""

from __future__ import annotations

import functools
import importlib.metadata
import types
from collections.abc import Callable, Generator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, cast

from ._receivers import ANY

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer, TracerProvider

    from ._event import Event
    from ._signal import Signal

__all__ = [
    "Observer",
    "add_observer",
    "calling",
    "describe",
    "instrument",
    "observers",
    "remove_observer",
    "signal_label",
    "uninstrument",
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


def _qualified(obj: Any) -> str:
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
        return _qualified(obj.__func__)
    if isinstance(obj, functools.partial):
        return f"functools.partial({describe(cast('functools.partial[Any]', obj).func)})"  # type: ignore[redundant-cast]
    if isinstance(obj, type | types.FunctionType | types.BuiltinFunctionType):
        return _qualified(obj)
    return f"<{_qualified(type(obj))} object>"


def signal_label(signal: Signal[Any]) -> str:
    """Return the signal's name, or its payload type's name when it has none."""
    return signal.name or signal.payload_type.__qualname__


# -- OpenTelemetry ---------------------------------------------------------------------------

SIGNAL = "aiosignals.signal"
SENDER = "aiosignals.sender"
PAYLOAD_TYPE = "aiosignals.payload_type"
RECEIVERS = "aiosignals.receivers"
RECEIVER = "aiosignals.receiver"
OUTCOME = "aiosignals.outcome"


class _OpenTelemetry(Observer):
    """Each send a span, each receiver call a child span; failures recorded on them."""

    wraps_receivers = True

    def __init__(self, tracer: Tracer) -> None:
        from opentelemetry.trace import SpanKind, Status, StatusCode

        self._tracer = tracer
        self._kind = SpanKind.INTERNAL
        self._status = Status
        self._error = StatusCode.ERROR

    @contextmanager
    def _span(self, name: str, attributes: dict[str, str | int]) -> Generator[None]:
        # Outcome and status are set here rather than by the SDK so that a cancellation
        # (a BaseException, and the normal end of a losing concurrent receiver) is not an
        # error, while every Exception is recorded with its traceback.
        with self._tracer.start_as_current_span(
            name,
            kind=self._kind,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield
            except Exception as exc:
                span.record_exception(exc)
                span.set_status(self._status(self._error, f"{type(exc).__name__}: {exc}"))
                span.set_attribute(OUTCOME, "error")
                raise
            except BaseException:
                span.set_attribute(OUTCOME, "cancelled")
                raise
            span.set_attribute(OUTCOME, "ok")

    def sending(
        self, signal: Signal[Any], sender: Any, payload: Event, receivers: int
    ) -> AbstractContextManager[object]:
        label = signal_label(signal)
        return self._span(
            f"aiosignals.send {label}",
            {
                SIGNAL: label,
                SENDER: describe(sender),
                PAYLOAD_TYPE: _qualified(type(payload)),
                RECEIVERS: receivers,
            },
        )

    def calling(
        self, signal: Signal[Any], receiver: Callable[..., Any]
    ) -> AbstractContextManager[object]:
        name = describe(receiver)
        return self._span(
            f"aiosignals.receiver {name}", {SIGNAL: signal_label(signal), RECEIVER: name}
        )


_instrumented: _OpenTelemetry | None = None


def instrument(tracer_provider: TracerProvider | None = None) -> None:
    """
    Trace every send and every receiver call with OpenTelemetry.

    Each send becomes a span named ``aiosignals.send <signal name>`` with the attributes
    ``aiosignals.signal``, ``aiosignals.sender``, ``aiosignals.payload_type``,
    ``aiosignals.receivers`` (how many receivers it reaches) and ``aiosignals.outcome``
    (``ok``, ``error`` or ``cancelled``); each receiver call a child span
    ``aiosignals.receiver <module.qualname>`` with ``aiosignals.receiver`` and its outcome.
    A failure is recorded on its span (:meth:`~opentelemetry.trace.Span.record_exception`)
    with an error status, whatever the signal's error policy. Senders that are neither
    classes, functions, strings nor numbers are named by their type only.

    Until this is called sends pay nothing for tracing; calling it again replaces the
    tracer provider.

    :param tracer_provider: the provider to take the tracer from; the global one by default
    :raises ImportError: if OpenTelemetry is not installed (the ``otel`` extra)

    .. versionadded:: 0.1
    """
    global _instrumented
    try:
        from opentelemetry import trace
    except ImportError as exc:
        raise ImportError(
            "aiosignals.instrument() needs OpenTelemetry: pip install 'aiosignals[otel]'"
        ) from exc
    try:
        version: str | None = importlib.metadata.version("aiosignals")
    except importlib.metadata.PackageNotFoundError:
        version = None
    tracer = trace.get_tracer("aiosignals", version, tracer_provider=tracer_provider)
    if _instrumented is not None:
        remove_observer(_instrumented)
    _instrumented = _OpenTelemetry(tracer)
    add_observer(_instrumented)


def uninstrument() -> None:
    """
    Stop tracing sends; sends pay nothing for it again. Does nothing if not instrumented.

    .. versionadded:: 0.1
    """
    global _instrumented
    if _instrumented is not None:
        remove_observer(_instrumented)
        _instrumented = None
