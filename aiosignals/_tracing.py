"""
OpenTelemetry tracing of sends: an :class:`~aiosignals._observers.Observer` that opens spans.

This module imports nothing of OpenTelemetry until :func:`instrument` is called, so sends
pay nothing for tracing until then.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Generator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

from ._observers import Observer, add_observer, describe, qualified, remove_observer, signal_label

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer, TracerProvider

    from ._event import Event
    from ._signal import Signal

__all__ = ["instrument", "uninstrument"]

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
                PAYLOAD_TYPE: qualified(type(payload)),
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
