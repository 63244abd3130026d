"""
:class:`Signal` (options, connections, task-scoped overrides, send) and ``@receiver``.

A send takes the inline path when its plan allows (plain receivers, default options,
nothing observed or overridden); otherwise it finds the plan for the sender and task,
lets observers see it, guards the depth, and runs the plan's runner.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable, Generator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from operator import length_hint
from typing import TYPE_CHECKING, Any, Generic, Unpack, overload

from . import _observers, _overrides, _recursion
from ._event import Event
from ._options import (
    ANY,
    ConnectKwargs,
    Mode,
    SendOptions,
    Sequential,
    check_max_depth,
    connect_options,
)
from ._payloads import coerce, no_sender
from ._receivers import EMPTY_PLAN, Plan, Receivers
from ._records import receiver_key
from ._registry import registry
from ._types import P, R

if TYPE_CHECKING:
    from ._records import Connection
    from ._runners import Results
    from ._types import ErrorPolicy, Receiver

__all__ = ["Signal", "receiver", "registry"]

# What send() sees when no sender was passed positionally (Django's send(sender=...)).
_NO_SENDER: Any = object()


class Signal(Generic[P]):
    """
    A signal whose receivers are called with ``(sender, payload)``.

    :param payload_type: the :class:`~aiosignals.Event` subclass of its payloads; ``send``
        validates into it and type checkers infer ``Signal[payload_type]`` from it
    :param name: a name, unique in the process, for logs, tracing and transports
    :param mode: :class:`~aiosignals.Sequential` (default) or
        :class:`~aiosignals.Concurrent`; a send may override it
    :param errors: ``"raise"``, ``"collect"`` or ``"log"``: what a send does when a receiver
        raises (see :meth:`send`); a send may override it
    :param timeout: seconds a receiver may run before it fails with :class:`TimeoutError`
    :param max_depth: how deeply a send may be nested inside the receivers of its own sends;
        the depth is counted per task once a send of the signal is under way, so a send that
        overlaps another one in a different task may count one level deeper (keep it at 2
        or more for signals sent concurrently)
    :raises TypeError: if *payload_type* is not an :class:`~aiosignals.Event` subclass, or
        *mode* is not a ``Sequential()`` or ``Concurrent(...)`` instance
    :raises ValueError: if *errors* is not a policy, *timeout* is not a positive number of
        seconds, or *max_depth* is below 1

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        payload_type: type[P],
        *,
        name: str | None = None,
        mode: Mode = Sequential(),  # noqa: B008 -- an immutable value object
        errors: ErrorPolicy = "raise",
        timeout: float | None = None,
        max_depth: int = 8,
    ) -> None:
        # Checked at run time too: the payload type often comes from untyped code.
        is_event = inspect.isclass(payload_type) and issubclass(payload_type, Event)  # type: ignore[redundant-expr]
        if not is_event:
            raise TypeError(
                f"a signal's payload type must be an Event subclass, not {payload_type!r}"
            )
        options = SendOptions(mode, errors, timeout).checked()
        self.payload_type: type[P] = payload_type
        """The payload model of this signal."""
        self.name = name
        """The signal's name, or ``None``."""
        self.max_depth = check_max_depth(max_depth)
        """How deeply its sends may nest in its own receivers."""
        # The plan of every send, if no connection is for a particular sender, and that
        # plan again if a default send may walk it inline (see send).
        self._any_plan: Plan | None = None
        self._fast_plan: Plan | None = None
        # How many sends of this signal are under way, in any task.
        self._active = 0
        self_ref = weakref.ref(self)

        def on_plan(plan: Plan | None) -> None:
            signal = self_ref()
            if signal is not None:
                signal._any_plan = plan
                signal._fast_plan = plan if plan is not None and plan.runner is None else None

        self._receivers = Receivers(options, on_plan)
        if name is not None:
            registry.add(self, self._receivers)

    @property
    def mode(self) -> Mode:
        """The default mode of its sends."""
        return self._receivers.options.mode

    @mode.setter
    def mode(self, mode: Mode) -> None:
        self._receivers.set_options(replace(self._receivers.options, mode=mode).checked())

    @property
    def errors(self) -> ErrorPolicy:
        """The default error policy of its sends."""
        return self._receivers.options.errors

    @errors.setter
    def errors(self, errors: ErrorPolicy) -> None:
        self._receivers.set_options(replace(self._receivers.options, errors=errors).checked())

    @property
    def timeout(self) -> float | None:
        """The default timeout of each receiver, in seconds, or ``None``."""
        return self._receivers.options.timeout

    @timeout.setter
    def timeout(self, timeout: float | None) -> None:
        self._receivers.set_options(replace(self._receivers.options, timeout=timeout).checked())

    def __repr__(self) -> str:
        kind = self.payload_type.__qualname__
        return f"<Signal {self.name or kind}[{kind}] receivers={len(self._receivers)}>"

    def validate(self, payload: object) -> P:
        """
        Return *payload* as an instance of the payload type, as :meth:`send` delivers it.

        For what publishes a payload to send later (the bus, the transports): a bad one
        fails at the publisher, where someone sees it, not in a worker.

        :raises pydantic.ValidationError: if *payload* does not validate
        """
        if type(payload) is self.payload_type:
            return payload
        return coerce(self.payload_type, payload, {})

    @overload
    def connect(
        self, receiver: Callable[[Any, P], R], /, **options: Unpack[ConnectKwargs]
    ) -> Callable[[Any, P], R]: ...

    @overload
    def connect(
        self, receiver: None = None, /, **options: Unpack[ConnectKwargs]
    ) -> Callable[[Callable[[Any, P], R]], Callable[[Any, P], R]]: ...

    def connect(
        self, receiver: Callable[[Any, P], R] | None = None, /, **options: Unpack[ConnectKwargs]
    ) -> Callable[[Any, P], R] | Callable[[Callable[[Any, P], R]], Callable[[Any, P], R]]:
        """
        Connect *receiver* to this signal and return it, so this also works as a decorator.

        A connection's key is, as in Django, ``(dispatch_uid, sender)`` when a
        *dispatch_uid* is given and ``(receiver, sender)`` otherwise: connecting under a key
        already connected does nothing. So one receiver under one uid for two senders is
        two connections, and ``connect(r)`` then ``connect(r, dispatch_uid="u")`` are two
        as well. A receiver connected for :data:`ANY` and for a sender is called twice by a
        send from that sender, as in Django. ``@signal.connect`` and
        ``@signal.connect(priority=5)`` both work.

        Context: a receiver run by a sequential send runs in the sender's context, so a
        ``ContextVar.set`` in it is seen by the next receiver and by the sender. Receivers
        run by a concurrent send, and ``thread=True`` receivers, each run in a copy of the
        sender's context (as tasks and threads do): what they set is not seen outside, also
        when a stage of a concurrent send has a single receiver and so starts no task.

        Options, by keyword:

        - ``sender``: receive only the sends of this object (by identity), or :data:`ANY`
        - ``weak``: what the signal keeps alive. ``None`` (default) holds bound methods
          weakly, so a handler never keeps its instance alive and goes when the instance
          does, and holds everything else (functions, closures, lambdas, partials,
          callable objects) strongly, so a closure connected inside a function does not
          silently vanish. ``True`` holds any receiver weakly, as Django and blinker do:
          it is disconnected when nothing else references it. ``False`` holds any
          receiver strongly, bound methods included, until it is disconnected.
        - ``dispatch_uid``: a stable identifier: de-duplicates connections, names the
          receiver for ``disconnect`` and for the outbox (required with *durable*)
        - ``priority``: higher runs first; equal priorities run in connection order
        - ``once``: disconnect the receiver after its first delivery
        - ``timeout``: seconds this receiver may run; see :meth:`send`
        - ``phase``: when to run relative to the enclosing transaction (:class:`Phase`)
        - ``thread``: run a plain (non-async) receiver in a worker thread: a daemon
          thread, so a receiver still running never keeps the process from exiting. At
          most 40 receiver threads run at once per event loop, counting those whose send
          timed out or was cancelled and which still run (a send waits for a free one
          within its timeout). It is not an anyio worker thread: to call back into the
          event loop, pass ``anyio.from_thread.run`` a ``token`` taken with
          ``anyio.lowlevel.current_token()``.
        - ``durable``: deliver through the outbox, at least once (needs *dispatch_uid*, which then
          names this receiver only); ``ordering``: its rows' order, ``"key"`` (per ordering key,
          see :class:`~aiosignals.outbox.OutboxRelay`) or ``"receiver"`` (one order for all)
        - ``errors``: this receiver's own error policy (``"raise"``, ``"collect"`` or ``"log"``),
          used instead of the send's for it, in deferred phases too: an after-commit receiver with
          ``errors="log"`` never fails the request that committed

        :param receiver: a coroutine function or plain callable taking ``(sender, payload)``
        :param options: the options listed above, by keyword, each optional
        :return: *receiver*, unchanged
        :raises TypeError: if *receiver* is not callable, cannot take ``(sender, payload)``
            (the message shows that form), or cannot be held weakly with ``weak=True``; for
            an unknown option, a *priority* not an integer or a *phase* not a :class:`Phase`
        :raises ValueError: if *durable* is set without a *dispatch_uid*, if a different
            receiver would be connected (for another sender) under the *dispatch_uid* of a
            durable one, or a durable one under the uid of another receiver; if *timeout*
            is not a positive number of seconds, *errors* not a policy (or *ordering* bad)
        """
        checked = connect_options(options)  # with no receiver too: @connect(prio=1) fails here
        if receiver is None:

            def decorate(fn: Callable[[Any, P], R]) -> Callable[[Any, P], R]:
                return self.connect(fn, **options)

            return decorate
        self._receivers.connect(self, receiver, checked)
        return receiver

    def disconnect(
        self,
        receiver: Callable[..., Any] | None = None,
        *,
        sender: Any = ANY,
        dispatch_uid: str | None = None,
        all_senders: bool = False,
    ) -> bool:
        """
        Disconnect a receiver, named by itself and its sender or by its *dispatch_uid*.

        As in Django, one connection goes: the one whose key is ``(dispatch_uid, sender)``
        when *dispatch_uid* is given, ``(receiver, sender)`` otherwise. With
        ``all_senders=True`` every connection of the receiver (or of the *dispatch_uid*)
        goes, whatever its sender, as blinker's ``disconnect`` does.

        :param receiver: the receiver to disconnect, connected for *sender* (default ANY)
        :param dispatch_uid: the uid it was connected under, instead of *receiver*
        :param all_senders: remove it for every sender (*sender* is then ignored)
        :return: whether a connection was removed
        :raises TypeError: if neither *receiver* nor *dispatch_uid* is given
        """
        return self._receivers.disconnect(receiver, sender, dispatch_uid, all_senders=all_senders)

    def _current_plan(self, sender: Any) -> Plan:
        """Return the plan of a send from *sender* in the current task, overrides applied."""
        plan = self._any_plan or self._receivers.plan_for(sender)
        override = _overrides.lookup(id(self)) if _overrides.active else None
        return plan if override is None else self._receivers.overridden(plan, sender, override)

    def receivers_for(self, sender: Any) -> list[Callable[..., Any]]:
        """
        Return the live receivers a send from *sender* would reach now, in call order.

        Task-scoped :meth:`muted` and :meth:`connected_to` blocks of the calling task apply.
        """
        alive = (record.resolve() for record in self._current_plan(sender).records)
        return [fn for fn in alive if fn is not None]

    def has_receivers_for(self, sender: Any) -> bool:
        """Return whether a send from *sender* would reach at least one receiver."""
        return any(record.resolve() is not None for record in self._current_plan(sender).records)

    @property
    def connections(self) -> tuple[Connection, ...]:
        """
        Every live connection of this signal, in call order: a read-only snapshot.

        Each :class:`~aiosignals.Connection` gives the receiver, its sender, uid,
        priority, phase and options. Task-scoped :meth:`connected_to` receivers are not
        connections and are not listed.

        .. versionadded:: 0.1
        """
        return self._receivers.connections()

    def muted(self, *receivers: Callable[..., Any]) -> AbstractContextManager[None]:
        """
        Skip receivers of this signal in the current task (and the tasks it starts).

        With no arguments every receiver is skipped; otherwise only those given.
        A concurrent task still receives.

        :return: a context manager
        """
        keys = frozenset(receiver_key(fn) for fn in receivers)
        return _overrides.override(id(self), mute_all=not receivers, muted_keys=keys)

    @contextmanager
    def connected_to(
        self, receiver: Receiver[P], sender: Any = ANY, *, priority: int = 0
    ) -> Generator[None]:
        """
        Connect *receiver* for the current task (and the tasks it starts) inside the block.

        :raises TypeError: if *receiver* cannot take ``(sender, payload)``
        """
        record = self._receivers.task_scoped(receiver, sender, priority)
        with _overrides.override(id(self), extra=(record,)):
            yield

    async def send(
        self,
        sender: Any = _NO_SENDER,
        payload: P | None = None,
        /,
        *,
        mode: Mode | None = None,
        errors: ErrorPolicy | None = None,
        timeout: float | None = None,
        **fields: Any,
    ) -> Results:
        """
        Send *payload* (or one validated from *fields*) from *sender* to the receivers.

        Receivers run by priority, then in connection order; the results come back in that
        order whatever the mode. Receivers deferred to a transaction phase are not in them.

        Error policies: with ``"raise"`` a sequential send stops at the first failure and
        re-raises it unchanged, a concurrent one cancels the other receivers and raises an
        :class:`ExceptionGroup` of the failures; with ``"collect"`` every receiver runs and a
        failure stands in the results in place of a result; ``"log"`` also logs each failure
        on the ``aiosignals`` logger. Cancellation always propagates, also when a receiver
        raises the cancellation exception itself. A receiver connected with its own
        ``errors`` follows that policy instead of the send's.

        A payload of a subclass of the payload type is delivered as the payload type
        itself, built from its fields (their values kept as they are, entities included):
        receivers get what the signal declares, and the outbox stores only that. A
        parametrised generic payload type (``PostSave[User]`` for a ``PostSave`` signal)
        is delivered unchanged.

        Context: as :meth:`connect` describes (sequential receivers share the sender's).

        A receiver runs at most the smaller of its own timeout and the send's (the
        signal's unless the send gives one); past it, it fails with :class:`TimeoutError`.

        ``mode``, ``errors`` and ``timeout`` are options of the send: a payload with fields
        of those names has to be built first and passed whole.

        :param sender: who sends, positionally (not Django's ``send(sender=...)``);
            receivers for another sender are skipped, those for it and :data:`ANY` both run
        :param payload: an instance of the signal's payload type
        :param mode: overrides the signal's mode for this send
        :param errors: overrides the signal's error policy for this send
        :param timeout: overrides the signal's receiver timeout for this send
        :param fields: the payload's fields, validated, when *payload* is not given
        :return: ``(receiver, result)`` pairs, a failure in place of its result
            when the policy collects
        :raises pydantic.ValidationError: if the payload is of another type or the fields
            do not validate; no receiver has run
        :raises ~aiosignals.RecursionDepthError: if this send is nested deeper than
            ``max_depth`` inside receivers of the same signal
        :raises TypeError: if no sender is given positionally, or a payload and fields
            both are
        :raises ValueError: if *errors* or *timeout* is not a valid option
        """
        payload_type = self.payload_type
        if payload is None:
            if sender is _NO_SENDER:
                raise no_sender(self, fields)
            payload = payload_type(**fields)
        elif type(payload) is not payload_type or fields:
            payload = coerce(payload_type, payload, fields)

        plan = self._fast_plan
        if (
            plan is None
            or self._active
            or _overrides.active
            or _observers.observers
            or mode is not None
            or errors is not None
            or timeout is not None
        ):
            # Not the common case: check the options (with no receiver too), find the plan
            # for this sender and task, take the general path unless the shortest applies.
            if mode is not None or errors is not None or timeout is not None:
                self._receivers.options.overridden(mode, errors, timeout)
            plan = self._any_plan
            if plan is None or _overrides.active:
                plan = self._current_plan(sender)
            if _observers.observers:
                # Tracing or aiosignals.testing is on: every send is reported, one that
                # reaches no receiver too, and a test may have muted it in every task.
                if _observers.mutes(self):
                    plan = EMPTY_PLAN
                with _observers.sending(self, sender, payload, len(plan.records)):
                    if not plan.records:
                        return []
                    return await self._send_general(plan, sender, payload, mode, errors, timeout)
            if (
                plan.runner is not None
                or self._active
                or mode is not None
                or errors is not None
                or timeout is not None
            ):
                if not plan.records:
                    return []
                return await self._send_general(plan, sender, payload, mode, errors, timeout)

        # The shortest path: plain receivers, default policies, no send of this signal
        # under way (so no depth to track). The common case, for a signal whose receivers
        # are all for any sender, gets here with one attribute lookup and a few tests.
        fns = plan.fns
        assert fns is not None
        if not fns:
            return []
        self._active = 1
        try:
            # Most receivers return None: run them with nothing but that test, and hand
            # back a copy of the precomputed (receiver, None) pairs.
            pending = iter(fns)
            for fn in pending:
                result = await fn(sender, payload)
                if result is not None:
                    break
            else:
                return plan.nones.copy()
            # The pairs so far, then this receiver's and the rest's.
            results: list[tuple[Callable[..., Any], Any]] = plan.nones[
                : len(fns) - length_hint(pending) - 1
            ]
            results.append((fn, result))
            for fn in pending:
                results.append((fn, await fn(sender, payload)))  # noqa: PERF401 -- an async comprehension costs a coroutine more
            return results
        finally:
            self._active -= 1

    async def _send_general(
        self,
        plan: Plan,
        sender: Any,
        payload: P,
        mode: Mode | None,
        errors: ErrorPolicy | None,
        timeout: float | None,
    ) -> Results:
        # Recursion guard. Writing a context variable on every send costs more than the
        # rest of a one-receiver send, so the per-task depth is only tracked once a send of
        # this signal is already under way somewhere. An unrelated send overlapping
        # another may be counted one level too deep; a runaway loop is caught all the same.
        token = _recursion.deeper(self) if self._active else None
        self._active += 1
        try:
            options = self._receivers.options
            if mode is not None or errors is not None or timeout is not None:
                options = options.overridden(mode, errors, timeout)
            runner = plan.runner
            if runner is None or options is not plan.options or _observers.wraps_receivers:
                runner = plan.runner_for(options, wrapped=_observers.wraps_receivers)
            return await runner(self, plan, sender, payload, options)
        finally:
            self._active -= 1
            if token is not None:
                _recursion.back(token)


def receiver(
    signal: Signal[P] | Sequence[Signal[Any]], **options: Unpack[ConnectKwargs]
) -> Callable[[Callable[[Any, P], R]], Callable[[Any, P], R]]:
    """
    Connect the decorated function to *signal*, or to each signal of a list.

    Reads like Django's ``@receiver``; the keyword arguments are those of
    :meth:`Signal.connect <aiosignals.Signal.connect>`.

    :param signal: a signal, or a list or tuple of signals
    :param options: the options of :meth:`Signal.connect <aiosignals.Signal.connect>`
    :return: a decorator that connects the function and returns it unchanged

    .. versionadded:: 0.1
    """
    signals: Sequence[Signal[Any]] = [signal] if isinstance(signal, Signal) else list(signal)
    connect_options(options, where="receiver")

    def decorator(fn: Callable[[Any, P], R]) -> Callable[[Any, P], R]:
        for each in signals:
            each.connect(fn, **options)
        return fn

    return decorator
