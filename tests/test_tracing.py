from __future__ import annotations

import functools
import sys
from collections.abc import Generator, Sequence

import anyio
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import aiosignals
import aiosignals._observers
from aiosignals import ANY, Concurrent, Event, Signal, instrument, uninstrument
from aiosignals._observers import describe
from aiosignals.testing import capture


class Ordered(Event):
    order_id: int


class Shop:
    pass


async def charge(sender: object, payload: Ordered) -> str:
    return "charged"


async def notify(sender: object, payload: Ordered) -> str:
    return "notified"


async def explode(sender: object, payload: Ordered) -> None:
    raise ValueError(f"order {payload.order_id} is cursed")


def _provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@pytest.fixture
def spans() -> Generator[InMemorySpanExporter]:
    provider, exporter = _provider()
    instrument(provider)
    try:
        yield exporter
    finally:
        uninstrument()
        provider.shutdown()


def _by_name(finished: Sequence[ReadableSpan]) -> dict[str, ReadableSpan]:
    return {span.name: span for span in finished}


def _parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def _span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    span_id: int = span.context.span_id
    return span_id


@pytest.mark.anyio
async def test_a_send_and_each_receiver_are_spans(spans: InMemorySpanExporter) -> None:
    """A send is a span with the signal's attributes; each receiver call a child span."""
    signal = Signal(Ordered, name="ordered")
    signal.connect(charge)
    signal.connect(notify)
    results = await signal.send(Shop, order_id=1)
    assert [result for _, result in results] == ["charged", "notified"]

    finished = spans.get_finished_spans()
    assert [span.name for span in finished] == [
        "aiosignals.receiver tests.test_tracing.charge",
        "aiosignals.receiver tests.test_tracing.notify",
        "aiosignals.send ordered",
    ]
    named = _by_name(finished)
    send = named["aiosignals.send ordered"]
    assert dict(send.attributes or {}) == {
        "aiosignals.signal": "ordered",
        "aiosignals.sender": "tests.test_tracing.Shop",
        "aiosignals.payload_type": "tests.test_tracing.Ordered",
        "aiosignals.receivers": 2,
        "aiosignals.outcome": "ok",
    }
    assert send.status.status_code is StatusCode.UNSET
    for name in ("charge", "notify"):
        child = named[f"aiosignals.receiver tests.test_tracing.{name}"]
        assert _parent_id(child) == _span_id(send)
        assert dict(child.attributes or {}) == {
            "aiosignals.signal": "ordered",
            "aiosignals.receiver": f"tests.test_tracing.{name}",
            "aiosignals.outcome": "ok",
        }


@pytest.mark.anyio
async def test_a_failure_is_recorded_on_both_spans(spans: InMemorySpanExporter) -> None:
    """With errors="raise" the failing receiver's span and the send span are errors."""
    signal = Signal(Ordered)
    signal.connect(explode)
    with pytest.raises(ValueError, match="cursed"):
        await signal.send(Shop, order_id=13)
    named = _by_name(spans.get_finished_spans())
    for name in ("aiosignals.receiver tests.test_tracing.explode", "aiosignals.send Ordered"):
        span = named[name]
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == "ValueError: order 13 is cursed"
        assert (span.attributes or {})["aiosignals.outcome"] == "error"
        [event] = span.events
        assert event.name == "exception"
        assert (event.attributes or {})["exception.type"] == "ValueError"


@pytest.mark.anyio
async def test_collected_failures_leave_the_send_ok(spans: InMemorySpanExporter) -> None:
    """With errors="collect" the receiver span is an error and the send succeeds."""
    signal = Signal(Ordered, errors="collect")
    signal.connect(explode)
    signal.connect(charge)
    results = await signal.send(Shop, order_id=2)
    assert isinstance(results[0][1], ValueError)
    named = _by_name(spans.get_finished_spans())
    failed = named["aiosignals.receiver tests.test_tracing.explode"]
    assert failed.status.status_code is StatusCode.ERROR
    ok = named["aiosignals.receiver tests.test_tracing.charge"]
    assert (ok.attributes or {})["aiosignals.outcome"] == "ok"
    assert (named["aiosignals.send Ordered"].attributes or {})["aiosignals.outcome"] == "ok"


@pytest.mark.anyio
async def test_concurrent_receivers_are_children_of_the_send(
    spans: InMemorySpanExporter,
) -> None:
    """Receivers running in tasks of a concurrent send still get the send as parent."""
    signal = Signal(Ordered, mode=Concurrent())
    signal.connect(charge)
    signal.connect(notify)
    signal.connect(charge, sender=Shop)  # a second stage of one, run inline
    results = await signal.send(Shop, order_id=3)
    assert [result for _, result in results] == ["charged", "notified", "charged"]
    finished = spans.get_finished_spans()
    [send] = [span for span in finished if span.name.startswith("aiosignals.send")]
    receivers = [span for span in finished if span.name.startswith("aiosignals.receiver")]
    assert len(receivers) == 3
    assert {_parent_id(span) for span in receivers} == {_span_id(send)}
    assert (send.attributes or {})["aiosignals.receivers"] == 3


@pytest.mark.anyio
async def test_cancelled_receivers_are_not_errors(spans: InMemorySpanExporter) -> None:
    """A concurrent receiver cancelled by its sibling's failure is marked cancelled."""
    signal = Signal(Ordered, mode=Concurrent())

    async def slow(sender: object, payload: Ordered) -> None:
        await anyio.sleep(10)

    signal.connect(slow)
    signal.connect(explode)
    with pytest.raises(ExceptionGroup):
        await signal.send(Shop, order_id=4)
    named = _by_name(spans.get_finished_spans())
    cancelled = named[
        "aiosignals.receiver tests.test_tracing."
        "test_cancelled_receivers_are_not_errors.<locals>.slow"
    ]
    assert (cancelled.attributes or {})["aiosignals.outcome"] == "cancelled"
    assert cancelled.status.status_code is StatusCode.UNSET
    assert named["aiosignals.send Ordered"].status.status_code is StatusCode.ERROR


@pytest.mark.anyio
async def test_a_timeout_is_recorded_on_the_receiver_span(spans: InMemorySpanExporter) -> None:
    """A receiver that runs past its timeout has a TimeoutError on its span."""
    signal = Signal(Ordered, errors="collect", timeout=0.01)

    async def stuck(sender: object, payload: Ordered) -> None:
        await anyio.sleep(10)

    signal.connect(stuck)
    [(_, outcome)] = await signal.send(Shop, order_id=5)
    assert isinstance(outcome, TimeoutError)
    [receiver] = [s for s in spans.get_finished_spans() if s.name.endswith(".stuck")]
    assert receiver.status.status_code is StatusCode.ERROR
    assert (receiver.events[0].attributes or {})["exception.type"] == "TimeoutError"


@pytest.mark.anyio
async def test_a_send_without_receivers_is_a_span(spans: InMemorySpanExporter) -> None:
    """A send that reaches nobody is still traced, with zero receivers."""
    signal = Signal(Ordered, name="lonely")
    assert await signal.send("checkout", order_id=6) == []
    [send] = spans.get_finished_spans()
    assert send.name == "aiosignals.send lonely"
    attributes = send.attributes or {}
    assert attributes["aiosignals.receivers"] == 0
    assert attributes["aiosignals.sender"] == "'checkout'"


@pytest.mark.anyio
async def test_the_send_span_joins_the_current_trace(spans: InMemorySpanExporter) -> None:
    """A send made inside an application span is its child, in the same trace."""
    signal = Signal(Ordered)
    signal.connect(charge)
    provider, exporter = _provider()
    tracer = provider.get_tracer("app")
    instrument(provider)  # again: replaces the provider of the fixture
    with tracer.start_as_current_span("checkout") as app_span:
        await signal.send(Shop(), order_id=7)
    assert spans.get_finished_spans() == ()
    named = _by_name(exporter.get_finished_spans())
    send = named["aiosignals.send Ordered"]
    assert _parent_id(send) == app_span.get_span_context().span_id
    assert send.context is not None
    assert send.context.trace_id == app_span.get_span_context().trace_id
    # An instance sender is named by its type: a span never carries an entity's data.
    assert (send.attributes or {})["aiosignals.sender"] == "<tests.test_tracing.Shop object>"
    assert len(aiosignals._observers.observers) == 1
    provider.shutdown()


@pytest.mark.anyio
async def test_uninstrument_stops_tracing() -> None:
    """After uninstrument() sends make no spans and the hot path has no observer."""
    provider, exporter = _provider()
    signal = Signal(Ordered)
    signal.connect(charge)
    instrument(provider)
    await signal.send(Shop, order_id=8)
    uninstrument()
    uninstrument()  # twice is harmless
    await signal.send(Shop, order_id=9)
    assert len(exporter.get_finished_spans()) == 2
    assert aiosignals._observers.observers == ()
    assert not aiosignals._observers.wraps_receivers
    provider.shutdown()


@pytest.mark.anyio
async def test_tracing_and_capture_together(spans: InMemorySpanExporter) -> None:
    """Tracing and a test capture observe the same sends independently."""
    signal = Signal(Ordered)
    signal.connect(charge)
    with capture(signal) as sent:
        await signal.send(Shop, order_id=10)
    sent.assert_sent_once(order_id=10)
    assert len(spans.get_finished_spans()) == 2
    assert len(aiosignals._observers.observers) == 1


def test_instrument_without_opentelemetry_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without OpenTelemetry, instrument() raises an ImportError naming the extra."""
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(ImportError, match=r"pip install 'aiosignals\[otel\]'"):
        aiosignals.instrument()
    assert aiosignals._observers.observers == ()


class _Handler:
    def handle(self, sender: object, payload: Ordered) -> None:
        pass

    def __call__(self, sender: object, payload: Ordered) -> None:
        pass


def test_describe_names_without_data() -> None:
    """describe() gives qualified names, reprs of plain values, and types of objects."""
    assert describe(ANY) == "ANY"
    assert describe(None) == "None"
    assert describe("svc") == "'svc'"
    assert describe(3) == "3"
    assert describe(charge) == "tests.test_tracing.charge"
    assert describe(Shop) == "tests.test_tracing.Shop"
    assert describe(_Handler().handle) == "tests.test_tracing._Handler.handle"
    assert describe(_Handler()) == "<tests.test_tracing._Handler object>"
    assert describe(functools.partial(charge)) == "functools.partial(tests.test_tracing.charge)"
    assert describe(sys) == "sys"
    assert describe(len) == "len"
    assert describe(int) == "int"


_CORE_SUITES = ["tests/test_signal.py", "tests/test_policies.py", "tests/test_context.py"]

_OBSERVED_RUN = """
import sys, pytest

class Observe:
    # Imports in a hook: aiosignals must not be imported before pytest can rewrite it.
    def pytest_configure(self, config):
        from opentelemetry.sdk.trace import TracerProvider
        from aiosignals import Event, Signal, instrument
        from aiosignals.testing import capture

        class Unrelated(Event):
            pass

        if sys.argv[1] == "otel":
            instrument(TracerProvider())
        else:
            capture(Signal(Unrelated), all_tasks=True).__enter__()

    def pytest_unconfigure(self, config):
        import aiosignals._tracing

        print("observers at the end:", len(aiosignals._observers.observers))

sys.exit(pytest.main(["-q", *sys.argv[2:]], plugins=[Observe()]))
"""


def test_core_behaviour_is_unchanged_when_observed() -> None:
    """The core suites pass with every send on the observed path (traced, or captured)."""
    import pathlib
    import subprocess

    root = pathlib.Path(__file__).parent.parent
    # Both runs at once: they take a few seconds each.
    runs = {
        observer: subprocess.Popen(
            [sys.executable, "-c", _OBSERVED_RUN, observer, *_CORE_SUITES],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for observer in ("otel", "capture")
    }
    for observer, run in runs.items():
        output, _ = run.communicate(timeout=120)
        assert run.returncode == 0, f"{observer}:\n{output[-4000:]}"
        assert " passed" in output
        assert "observers at the end: 1" in output, output[-2000:]
