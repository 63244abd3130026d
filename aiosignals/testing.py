"""
Helpers for testing code that sends signals; no pytest needed.

Assert that a signal was sent, with :func:`capture`, rather than mocking its receivers;
silence expensive receivers with :func:`muted`; test a receiver by calling it directly
as ``await receiver(sender, payload)``. The pytest plugin (:mod:`aiosignals.pytest_plugin`)
offers the same as the ``capture`` and ``muted_signals`` fixtures.

.. versionadded:: 0.1
"""

from __future__ import annotations

from contextlib import AbstractContextManager, ExitStack, contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Generic, Self

from ._observers import Observer, add_observer, remove_observer
from ._options import ANY
from ._signal import Signal
from ._types import P

if TYPE_CHECKING:
    from collections.abc import Generator, Iterator
    from types import TracebackType

    from ._event import Event

__all__ = ["Capture", "capture", "muted"]


class _Unset:
    """The type of the "not given" marker of the assertion helpers."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Any = _Unset()

_task_captures: ContextVar[tuple[Capture[Any], ...]] = ContextVar(
    "aiosignals_task_captures", default=()
)


class _Hooks(Observer):
    """
    The one observer behind every open capture and process-wide mute.

    It is registered while at least one of them is open, so sends pay for it only then.
    """

    def __init__(self) -> None:
        self.users = 0
        self.everywhere: list[Capture[Any]] = []
        # Every capture entered and not yet left, whichever context it was entered in.
        self.open: set[Capture[Any]] = set()
        self.muted: dict[Signal[Any], int] = {}

    def acquire(self) -> None:
        self.users += 1
        if self.users == 1:
            add_observer(self)

    def release(self) -> None:
        self.users -= 1
        if self.users == 0:
            remove_observer(self)

    def mutes(self, signal: Signal[Any]) -> bool:
        return signal in self.muted

    def sending(
        self, signal: Signal[Any], sender: Any, payload: Event, receivers: int
    ) -> AbstractContextManager[object]:
        for recorder in (*self.everywhere, *_task_captures.get()):
            # A capture left in another context (a child task, a fixture's teardown) is still
            # in this context's tuple, but no longer open: it records nothing more.
            if recorder not in self.open:
                continue
            if recorder.signal is signal and (recorder.sender is ANY or recorder.sender is sender):
                recorder.calls.append((sender, payload))
        return super().sending(signal, sender, payload, receivers)


_hooks = _Hooks()


class Capture(Generic[P]):
    """
    The sends of one signal recorded by :func:`capture`, in the order they were made.

    A send is recorded when it starts, after its payload is validated and before any
    receiver runs: a send whose receivers fail, are muted, or do not exist is recorded
    all the same. A capture is not a receiver: it is not in a send's results, nor in
    ``receivers_for()``, and ``has_receivers_for()`` does not count it.

    Use it as a context manager (``with capture(signal) as sent:``); it records nothing
    before it is entered or after it is left, and can be entered once.

    .. versionadded:: 0.1
    """

    def __init__(self, signal: Signal[P], sender: Any = ANY, *, all_tasks: bool = False) -> None:
        if not isinstance(signal, Signal):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(f"capture() needs a Signal, got {signal!r}")
        self.signal = signal
        """The signal whose sends are recorded."""
        self.sender = sender
        """Only sends from this sender (by identity) are recorded, or every one with ``ANY``."""
        self.all_tasks = all_tasks
        """Whether sends of every task are recorded, not only the entering task's."""
        self.calls: list[tuple[Any, P]] = []
        """Each recorded send as ``(sender, payload)``."""
        self._state = "new"

    @property
    def payloads(self) -> list[P]:
        """The payloads of the recorded sends."""
        return [payload for _, payload in self.calls]

    @property
    def senders(self) -> list[Any]:
        """The senders of the recorded sends."""
        return [sender for sender, _ in self.calls]

    def __len__(self) -> int:
        return len(self.calls)

    def __iter__(self) -> Iterator[tuple[Any, P]]:
        return iter(self.calls)

    def __repr__(self) -> str:
        return f"<Capture of {self.signal!r}: {len(self.calls)} send(s)>"

    def clear(self) -> None:
        """Forget the sends recorded so far."""
        self.calls.clear()

    # -- recording -------------------------------------------------------------------------

    def __enter__(self) -> Self:
        if self._state != "new":
            raise RuntimeError(f"{self!r} was already {self._state}; make a new capture()")
        _hooks.acquire()
        _hooks.open.add(self)
        if self.all_tasks:
            _hooks.everywhere.append(self)
        else:
            _task_captures.set((*_task_captures.get(), self))
        self._state = "entered"
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._state != "entered":
            return
        self._state = "left"
        _hooks.open.discard(self)
        if self.all_tasks:
            _hooks.everywhere.remove(self)
        else:
            # Removes this capture only, not a reset to the tuple it entered on: captures
            # left out of order (c1 before c2) must leave c2 recording and c1 not.
            _task_captures.set(tuple(c for c in _task_captures.get() if c is not self))
        _hooks.release()

    # -- assertions ------------------------------------------------------------------------

    def _check_fields(self, fields: dict[str, Any]) -> None:
        # A misspelt field would make assert_not_sent() pass whatever was sent.
        unknown = sorted(set(fields) - set(self.signal.payload_type.model_fields))
        if unknown:
            raise TypeError(
                f"{self.signal.payload_type.__qualname__} has no field(s) {', '.join(unknown)}"
            )

    @staticmethod
    def _matches(sender: Any, payload: Event, expected: tuple[Any, Any, dict[str, Any]]) -> bool:
        want_sender, want_payload, fields = expected
        if want_sender is not _UNSET and sender != want_sender:
            return False
        if want_payload is not _UNSET and payload != want_payload:
            return False
        return all(getattr(payload, name) == value for name, value in fields.items())

    def _describe(self) -> str:
        if not self.calls:
            return f"no send of {self.signal!r} was recorded"
        lines = [f"{len(self.calls)} send(s) of {self.signal!r} recorded:"]
        lines.extend(
            f"  {index}: sender={sender!r} payload={payload!r}"
            for index, (sender, payload) in enumerate(self.calls)
        )
        return "\n".join(lines)

    @staticmethod
    def _criteria(sender: Any, payload: Any, fields: dict[str, Any]) -> str:
        parts = [] if sender is _UNSET else [f"sender={sender!r}"]
        if payload is not _UNSET:
            parts.append(f"payload={payload!r}")
        parts.extend(f"{name}={value!r}" for name, value in fields.items())
        return ", ".join(parts) or "anything"

    def assert_sent(self, *, sender: Any = _UNSET, payload: Any = _UNSET, **fields: Any) -> P:
        """
        Assert that at least one recorded send matches; return the first matching payload.

        :param sender: the expected sender (compared with ``==``)
        :param payload: the expected payload (compared with ``==``)
        :param fields: expected values of payload fields; other fields may be anything
        :raises AssertionError: if no recorded send matches, listing what was sent
        :raises TypeError: if a name in *fields* is not a field of the payload type
        """
        self._check_fields(fields)
        expected = (sender, payload, fields)
        for sent_sender, sent_payload in self.calls:
            if self._matches(sent_sender, sent_payload, expected):
                return sent_payload
        raise AssertionError(
            f"expected a send matching {self._criteria(sender, payload, fields)}; "
            + self._describe()
        )

    def assert_sent_once(self, *, sender: Any = _UNSET, payload: Any = _UNSET, **fields: Any) -> P:
        """
        Assert that exactly one send was recorded, and that it matches; return its payload.

        The arguments are those of :meth:`assert_sent`.

        :raises AssertionError: if there were no sends or several, or the one does not match
        :raises TypeError: if a name in *fields* is not a field of the payload type
        """
        self._check_fields(fields)
        if len(self.calls) != 1:
            raise AssertionError(f"expected exactly one send; {self._describe()}")
        sent_sender, sent_payload = self.calls[0]
        if not self._matches(sent_sender, sent_payload, (sender, payload, fields)):
            raise AssertionError(
                f"expected the send to match {self._criteria(sender, payload, fields)}; "
                + self._describe()
            )
        return sent_payload

    def assert_not_sent(
        self, *, sender: Any = _UNSET, payload: Any = _UNSET, **fields: Any
    ) -> None:
        """
        Assert that no recorded send matches; with no arguments, that nothing was sent.

        The arguments are those of :meth:`assert_sent`.

        :raises AssertionError: if a recorded send matches, listing what was sent
        :raises TypeError: if a name in *fields* is not a field of the payload type
        """
        self._check_fields(fields)
        expected = (sender, payload, fields)
        if any(self._matches(s, p, expected) for s, p in self.calls):
            raise AssertionError(
                f"expected no send matching {self._criteria(sender, payload, fields)}; "
                + self._describe()
            )


def capture(signal: Signal[P], sender: Any = ANY, *, all_tasks: bool = False) -> Capture[P]:
    """
    Record the sends of *signal* made inside the ``with`` block, for assertions.

    Only the current task and the tasks it starts are recorded, the same scope as
    :meth:`Signal.muted <aiosignals.Signal.muted>`: a concurrent test or background task
    does not pollute the record. Receivers still run; combine with :func:`muted` to
    silence them. ::

        with capture(user_registered) as sent:
            await service.register("a@b.c")
        sent.assert_sent_once(sender=AccountService, email="a@b.c")

    :param signal: the signal to watch
    :param sender: record only the sends of this sender (by identity), or every one
    :param all_tasks: record the sends of every task, such as a background
        :class:`~aiosignals.EventBus` worker started outside the block
    :return: a :class:`Capture` to enter; it holds the sends
    :raises TypeError: if *signal* is not a :class:`~aiosignals.Signal`

    .. versionadded:: 0.1
    """
    return Capture(signal, sender, all_tasks=all_tasks)


@contextmanager
def _muted_everywhere(signals: tuple[Signal[Any], ...]) -> Generator[None]:
    _hooks.acquire()
    for signal in signals:
        _hooks.muted[signal] = _hooks.muted.get(signal, 0) + 1
    try:
        yield
    finally:
        for signal in signals:
            left = _hooks.muted[signal] - 1
            if left:
                _hooks.muted[signal] = left
            else:
                del _hooks.muted[signal]
        _hooks.release()


def muted(*signals: Signal[Any], all_tasks: bool = False) -> AbstractContextManager[None]:
    """
    Deliver the sends of *signals* to no receiver inside the ``with`` block.

    By default only in the current task and the tasks it starts, as
    :meth:`Signal.muted <aiosignals.Signal.muted>`, which this applies to each signal.
    Sends are still validated and still recorded by :func:`capture`, and return ``[]``.

    :param signals: the signals to mute
    :param all_tasks: mute them in every task, such as a background worker started
        outside the block
    :return: a context manager
    :raises TypeError: if no signal is given, or one is not a :class:`~aiosignals.Signal`

    .. versionadded:: 0.1
    """
    if not signals:
        raise TypeError("muted() needs at least one signal")
    for signal in signals:
        if not isinstance(signal, Signal):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(f"muted() takes signals, got {signal!r}")
    return _muted_everywhere(signals) if all_tasks else _muted_here(signals)


@contextmanager
def _muted_here(signals: tuple[Signal[Any], ...]) -> Generator[None]:
    with ExitStack() as stack:
        for signal in signals:
            stack.enter_context(signal.muted())
        yield
