from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING, Any, assert_type

import anyio
import pytest
from pydantic import ValidationError

import aiosignals._observers
from aiosignals import Concurrent, Event, Signal
from aiosignals.testing import Capture, capture, muted

if TYPE_CHECKING:
    from aiosignals.pytest_plugin import CaptureFixture, MutedSignalsFixture

pytest_plugins = ["pytester"]


class Registered(Event):
    user_id: int
    email: str = "a@b.c"


class Service:
    pass


class Other:
    pass


def _signal_with_log() -> tuple[Signal[Registered], list[int]]:
    signal = Signal(Registered, name="registered")
    log: list[int] = []

    async def remember(sender: object, payload: Registered) -> int:
        log.append(payload.user_id)
        return payload.user_id

    signal.connect(remember)
    return signal, log


# -- capture -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_capture_records_sender_and_payload_in_order() -> None:
    """capture() records each send as (sender, payload), in order; receivers still run."""
    signal, log = _signal_with_log()
    with capture(signal) as sent:
        await signal.send(Service, user_id=1)
        await signal.send(Other, Registered(user_id=2, email="x@y.z"))
    assert log == [1, 2]
    assert len(sent) == 2
    assert sent.senders == [Service, Other]
    assert sent.payloads == [Registered(user_id=1), Registered(user_id=2, email="x@y.z")]
    assert sent.calls == list(sent)
    assert sent.calls[0] == (Service, Registered(user_id=1))


@pytest.mark.anyio
async def test_capture_records_before_receivers_and_despite_failures() -> None:
    """A send is recorded before its receivers run, and stays recorded when one fails."""
    signal = Signal(Registered)
    seen_inside: list[int] = []

    with capture(signal) as sent:

        async def fail(sender: object, payload: Registered) -> None:
            seen_inside.append(len(sent))
            raise RuntimeError("boom")

        signal.connect(fail)
        with pytest.raises(RuntimeError, match="boom"):
            await signal.send(Service, user_id=7)
    assert seen_inside == [1]
    assert sent.payloads == [Registered(user_id=7)]


@pytest.mark.anyio
async def test_capture_records_sends_without_receivers_and_muted_sends() -> None:
    """Sends that reach no receiver, or whose receivers are muted, are recorded."""
    bare = Signal(Registered)
    signal, log = _signal_with_log()
    with capture(bare) as bare_sent, capture(signal) as sent, muted(signal):
        assert await bare.send(Service, user_id=1) == []
        assert await signal.send(Service, user_id=2) == []
    assert log == []
    assert bare_sent.payloads == [Registered(user_id=1)]
    assert sent.payloads == [Registered(user_id=2)]


@pytest.mark.anyio
async def test_capture_is_not_a_receiver() -> None:
    """A capture does not show in results, receivers_for() or has_receivers_for()."""
    signal, _ = _signal_with_log()
    bare = Signal(Registered)
    with capture(signal), capture(bare):
        results = await signal.send(Service, user_id=3)
        assert [result for _, result in results] == [3]
        assert len(signal.receivers_for(Service)) == 1
        assert not bare.has_receivers_for(Service)


@pytest.mark.anyio
async def test_capture_filters_by_sender_identity() -> None:
    """capture(signal, sender) records only that sender's sends."""
    signal, _ = _signal_with_log()
    with capture(signal, Service) as sent:
        await signal.send(Other, user_id=1)
        await signal.send(Service, user_id=2)
    assert sent.calls == [(Service, Registered(user_id=2))]


@pytest.mark.anyio
async def test_capture_skips_sends_that_fail_validation() -> None:
    """A send whose payload does not validate never happened, so it is not recorded."""
    signal, _ = _signal_with_log()
    with capture(signal) as sent, pytest.raises(ValidationError):
        await signal.send(Service, user_id="not a number")
    sent.assert_not_sent()


@pytest.mark.anyio
async def test_capture_works_for_concurrent_sends() -> None:
    """Concurrent-mode sends are recorded and their results are unchanged."""
    signal, log = _signal_with_log()

    async def second(sender: object, payload: Registered) -> str:
        return "second"

    signal.connect(second)
    with capture(signal) as sent:
        results = await signal.send(Service, user_id=4, mode=Concurrent())
    assert [result for _, result in results] == [4, "second"]
    assert log == [4]
    assert sent.payloads == [Registered(user_id=4)]


@pytest.mark.anyio
async def test_capture_is_scoped_to_the_current_task_and_its_children() -> None:
    """Sends of a concurrent task are not recorded; those of tasks started inside are."""
    signal, _ = _signal_with_log()
    inside = anyio.Event()
    outside_sent = anyio.Event()

    async def concurrent_sender() -> None:
        await inside.wait()
        await signal.send(Other, user_id=99)
        outside_sent.set()

    async with anyio.create_task_group() as outer:
        outer.start_soon(concurrent_sender)
        with capture(signal) as sent:
            inside.set()
            await outside_sent.wait()
            async with anyio.create_task_group() as inner:
                inner.start_soon(signal.send, Service, Registered(user_id=1))
    assert sent.calls == [(Service, Registered(user_id=1))]


@pytest.mark.anyio
async def test_capture_all_tasks_records_a_concurrent_task() -> None:
    """capture(..., all_tasks=True) records sends made by a task started outside the block."""
    signal, _ = _signal_with_log()
    go = anyio.Event()
    done = anyio.Event()

    async def background() -> None:
        await go.wait()
        await signal.send(Other, user_id=5)
        done.set()

    async with anyio.create_task_group() as group:
        group.start_soon(background)
        with capture(signal, all_tasks=True) as sent:
            go.set()
            await done.wait()
    assert sent.calls == [(Other, Registered(user_id=5))]


@pytest.mark.anyio
async def test_capture_records_nothing_outside_its_block_and_is_single_use() -> None:
    """Nothing is recorded before entering or after leaving; entering twice is an error."""
    signal, _ = _signal_with_log()
    recorder = capture(signal)
    await signal.send(Service, user_id=1)
    with recorder:
        await signal.send(Service, user_id=2)
    await signal.send(Service, user_id=3)
    assert recorder.payloads == [Registered(user_id=2)]
    with pytest.raises(RuntimeError, match="already left"), recorder:
        pass


@pytest.mark.anyio
async def test_nested_captures_each_record() -> None:
    """Two captures of one signal both record; leaving the inner keeps the outer going."""
    signal, _ = _signal_with_log()
    with capture(signal) as outer:
        with capture(signal) as inner:
            await signal.send(Service, user_id=1)
        await signal.send(Service, user_id=2)
    assert inner.payloads == [Registered(user_id=1)]
    assert outer.payloads == [Registered(user_id=1), Registered(user_id=2)]


@pytest.mark.anyio
async def test_captures_left_out_of_order_do_not_disturb_each_other() -> None:
    """Leaving c1 before c2 keeps c2 recording and stops c1 for good (not a LIFO reset)."""
    signal, _ = _signal_with_log()
    first = capture(signal).__enter__()
    second = capture(signal).__enter__()
    first.__exit__(None, None, None)
    await signal.send(Service, user_id=1)
    second.__exit__(None, None, None)
    with capture(signal) as third:
        await signal.send(Service, user_id=2)
    await signal.send(Service, user_id=3)
    assert first.payloads == []
    assert second.payloads == [Registered(user_id=1)]
    assert third.payloads == [Registered(user_id=2)]
    assert aiosignals._observers.observers == ()


@pytest.mark.anyio
async def test_capture_left_in_a_child_task_stops_recording_in_the_parent() -> None:
    """A capture entered here and left in a child task records nothing more here."""
    signal, _ = _signal_with_log()
    recorder = capture(signal).__enter__()

    async def leave() -> None:
        recorder.__exit__(None, None, None)

    async with anyio.create_task_group() as group:
        group.start_soon(leave)
    await signal.send(Service, user_id=1)
    assert recorder.payloads == []
    assert aiosignals._observers.observers == ()


@pytest.mark.anyio
async def test_capture_keeps_the_payload_type_and_none_is_a_sender() -> None:
    """capture() of a Signal[P] is a Capture[P]; capture(signal, None) is None's sends only."""
    signal, _ = _signal_with_log()
    with capture(signal, None) as sent:
        await signal.send(Service, user_id=1)
        await signal.send(None, user_id=2)
    assert_type(sent, Capture[Registered])
    assert_type(sent.payloads, list[Registered])
    payload = sent.assert_sent_once()
    assert_type(payload, Registered)
    assert payload.user_id == 2


def test_hooks_are_removed_when_the_last_capture_or_mute_ends() -> None:
    """With every capture and mute closed, sends are back to observing nothing."""
    signal, _ = _signal_with_log()
    assert aiosignals._observers.observers == ()
    with capture(signal), muted(signal, all_tasks=True), capture(signal, all_tasks=True):
        assert len(aiosignals._observers.observers) == 1
    assert aiosignals._observers.observers == ()
    with pytest.raises(ZeroDivisionError), capture(signal):
        1 / 0  # noqa: B018 -- the block must fail
    assert aiosignals._observers.observers == ()


def test_capture_rejects_what_is_not_a_signal() -> None:
    """capture() of something else is a TypeError, not a capture that never records."""
    with pytest.raises(TypeError, match="needs a Signal"):
        capture("registered")  # type: ignore[arg-type]


# -- assertion helpers ---------------------------------------------------------------------


def _filled(*payloads: tuple[Any, Registered]) -> Capture[Registered]:
    recorder = capture(Signal(Registered))
    recorder.calls.extend(payloads)
    return recorder


def test_assert_sent_matches_sender_payload_and_fields() -> None:
    """assert_sent finds a matching send by sender, whole payload or some fields."""
    first, second = Registered(user_id=1), Registered(user_id=2, email="x@y.z")
    sent = _filled((Service, first), (Other, second))
    assert sent.assert_sent() is first
    assert sent.assert_sent(sender=Other) is second
    assert sent.assert_sent(payload=Registered(user_id=2, email="x@y.z")) is second
    assert sent.assert_sent(email="x@y.z") is second
    assert sent.assert_sent(sender=Service, user_id=1) is first
    with pytest.raises(AssertionError) as failure:
        sent.assert_sent(sender=Other, user_id=1)
    message = str(failure.value)
    assert "sender=<class 'tests.test_testing.Other'>, user_id=1" in message
    assert "2 send(s)" in message
    assert "payload=Registered(user_id=2, email='x@y.z')" in message


def test_assert_sent_once_needs_exactly_one_matching_send() -> None:
    """assert_sent_once fails on no send, on two sends, and on one that does not match."""
    with pytest.raises(AssertionError, match="no send"):
        _filled().assert_sent_once()
    one = _filled((Service, Registered(user_id=1)))
    assert one.assert_sent_once(user_id=1) == Registered(user_id=1)
    with pytest.raises(AssertionError, match="expected the send to match user_id=2"):
        one.assert_sent_once(user_id=2)
    two = _filled((Service, Registered(user_id=1)), (Service, Registered(user_id=1)))
    with pytest.raises(AssertionError, match="exactly one"):
        two.assert_sent_once(user_id=1)


def test_assert_not_sent() -> None:
    """assert_not_sent() fails on any send; with criteria, only on a matching one."""
    _filled().assert_not_sent()
    sent = _filled((Service, Registered(user_id=1)))
    sent.assert_not_sent(user_id=2)
    sent.assert_not_sent(sender=Other)
    with pytest.raises(AssertionError, match="expected no send matching anything"):
        sent.assert_not_sent()
    with pytest.raises(AssertionError, match="user_id=1"):
        sent.assert_not_sent(user_id=1)


def test_assertions_reject_unknown_fields() -> None:
    """A misspelt field is a TypeError, so assert_not_sent cannot pass by accident."""
    sent = _filled((Service, Registered(user_id=1)))
    for check in (sent.assert_sent, sent.assert_sent_once, sent.assert_not_sent):
        with pytest.raises(TypeError, match="Registered has no field"):
            check(usr_id=1)


def test_clear_forgets_recorded_sends() -> None:
    """clear() empties the record."""
    sent = _filled((Service, Registered(user_id=1)))
    sent.clear()
    assert len(sent) == 0
    sent.assert_not_sent()


# -- muted ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_muted_silences_several_signals_in_this_task_only() -> None:
    """muted(a, b) delivers nothing in this task; a concurrent task still receives."""
    first, first_log = _signal_with_log()
    second, second_log = _signal_with_log()
    entered = anyio.Event()
    sent_outside = anyio.Event()

    async def outside() -> None:
        await entered.wait()
        await first.send(Other, user_id=100)
        sent_outside.set()

    async with anyio.create_task_group() as group:
        group.start_soon(outside)
        with muted(first, second):
            entered.set()
            assert await first.send(Service, user_id=1) == []
            assert await second.send(Service, user_id=2) == []
            await sent_outside.wait()
    assert first_log == [100]
    assert second_log == []
    await second.send(Service, user_id=3)
    assert second_log == [3]


@pytest.mark.anyio
async def test_muted_all_tasks_silences_a_concurrent_task() -> None:
    """muted(..., all_tasks=True) mutes sends of tasks started outside the block too."""
    signal, log = _signal_with_log()
    go = anyio.Event()
    done = anyio.Event()

    async def background() -> None:
        await go.wait()
        assert await signal.send(Other, user_id=1) == []
        done.set()

    async with anyio.create_task_group() as group:
        group.start_soon(background)
        with muted(signal, all_tasks=True):
            go.set()
            await done.wait()
    await signal.send(Other, user_id=2)
    assert log == [2]


def test_muted_rejects_bad_arguments() -> None:
    """muted() without signals, or with something else, is a TypeError."""
    with pytest.raises(TypeError, match="at least one signal"):
        muted()
    with pytest.raises(TypeError, match="takes signals"):
        muted(Signal(Registered), "registered")  # type: ignore[arg-type]


# -- the pytest plugin ---------------------------------------------------------------------

_PLUGIN_TESTS = textwrap.dedent(
    """
    import anyio
    import pytest

    import aiosignals._observers
    from aiosignals import Event, Signal
    from aiosignals.pytest_plugin import CaptureFixture, MutedSignalsFixture

    class Ping(Event):
        n: int

    ping = Signal(Ping, name="ping")
    log = []

    @ping.connect
    async def remember(sender, payload):
        log.append(payload.n)

    @pytest.fixture(params=["asyncio", "trio"])
    def anyio_backend(request):
        return request.param

    @pytest.mark.anyio
    async def test_capture_fixture(capture: CaptureFixture) -> None:
        sent = capture(ping)
        only_str = capture(ping, "svc")
        async with anyio.create_task_group() as group:
            group.start_soon(ping.send, "svc", Ping(n=1))
        await ping.send("other", Ping(n=2))
        assert [p.n for p in sent.payloads] == [1, 2]
        only_str.assert_sent_once(sender="svc", n=1)

    @pytest.mark.anyio
    async def test_muted_signals_fixture(muted_signals: MutedSignalsFixture, capture) -> None:
        log.clear()
        sent = capture(ping)
        muted_signals(ping)
        assert await ping.send("svc", Ping(n=3)) == []
        assert log == []
        sent.assert_sent_once(n=3)

    def test_fixtures_are_torn_down() -> None:
        assert aiosignals._observers.observers == ()
        anyio.run(ping.send, "svc", Ping(n=4))
        assert log == [4]

    def test_failure_message(capture) -> None:
        capture(ping)
        anyio.run(ping.send, "svc", Ping(n=5))
        capture(ping).assert_sent_once(n=6)
    """
)


@pytest.fixture
def pytester(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester whose runs, like ours, turn warnings into errors."""
    pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\nfilterwarnings = error\n"
    )
    return pytester


def test_plugin_fixtures_through_the_entry_point(pytester: pytest.Pytester) -> None:
    """The capture and muted_signals fixtures work on asyncio and trio and clean up."""
    pytester.makepyfile(test_plugin=_PLUGIN_TESTS)
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines(["*test_failure_message FAILED*", "*expected exactly one send*"])


@pytest.mark.anyio
async def test_the_capture_fixture_takes_sender_as_a_keyword(
    request: pytest.FixtureRequest,
) -> None:
    """capture(signal, sender=Service) records only that sender's sends, as documented."""
    factory: CaptureFixture = request.getfixturevalue("capture")
    signal, _ = _signal_with_log()
    sent = factory(signal, sender=Service)
    await signal.send(Other, user_id=2)
    await signal.send(Service, user_id=1)
    assert sent.assert_sent_once().user_id == 1


@pytest.mark.anyio
async def test_plugin_fixtures_in_this_session(request: pytest.FixtureRequest) -> None:
    """The fixtures are typed by CaptureFixture and MutedSignalsFixture, here as anywhere."""
    factory: CaptureFixture = request.getfixturevalue("capture")
    mute: MutedSignalsFixture = request.getfixturevalue("muted_signals")
    signal, log = _signal_with_log()
    sent = factory(signal, Service)
    assert_type(sent, Capture[Registered])
    mute(signal)
    await signal.send(Service, user_id=1)
    await signal.send(Other, user_id=2)
    assert log == []
    assert sent.assert_sent_once().user_id == 1


def test_plugin_is_registered_as_aiosignals(pytester: pytest.Pytester) -> None:
    """Disabling the entry point named aiosignals removes the fixtures."""
    pytester.makepyfile(
        test_plain="def test_uses_capture(capture):\n    pass\n",
    )
    assert pytester.runpytest().ret == 0
    result = pytester.runpytest("-p", "no:aiosignals")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'capture' not found*"])
