from __future__ import annotations

import functools
import inspect
import itertools
import types
import weakref
from collections.abc import Callable, Generator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from contextvars import ContextVar
from operator import length_hint
from typing import TYPE_CHECKING, Any, Generic, overload

from . import _context, _fastpath, _recursion, _tracing  # pyright: ignore[reportPrivateUsage] -- a module, not a name re-exported by __init__
from ._connections import ConnectionTable
from ._event import Event
from ._modes import Concurrent, Mode, Sequential
from ._payloads import coerce, no_sender
from ._phases import Phase, current_scope
from ._policies import (
    check_errors,
    check_max_depth,
    check_mode,
    check_timeout,
    grouped,
    guarded,
    invoke,
    report,
    run_limited,
)
from ._receivers import (
    ANY,
    EMPTY_PLAN,
    Connection,
    Plan,
    ReceiverRecord,
    check_receiver,
    is_async_callable,
    receiver_key,
)
from ._types import P, R
from .exceptions import RecursionDepthError

if TYPE_CHECKING:
    from ._types import ErrorPolicy, Ordering

__all__ = ["Signal", "registry"]

# What send() sees when no sender was passed positionally (Django's send(sender=...)).
_NO_SENDER: Any = object()

# Stands in the outcomes of a concurrent stage for a once receiver another send delivered.
_SKIPPED: Any = object()

registry: weakref.WeakValueDictionary[str, Signal[Any]] = weakref.WeakValueDictionary()
"""Named signals of this process by name (the last one created wins); used by transports."""


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
        mode = check_mode(mode)
        errors = check_errors(errors)
        timeout = check_timeout(timeout)
        max_depth = check_max_depth(max_depth)
        self.payload_type: type[P] = payload_type
        """The payload model of this signal."""
        self.name = name
        """The signal's name, or ``None``."""
        self._mode: Mode = mode
        self._errors: ErrorPolicy = errors
        self._timeout = timeout
        self._fast = False
        self._fast_plan: Plan | None = None
        self._any_plan: Plan | None = EMPTY_PLAN
        self._table = ConnectionTable()
        # The table's own dict, read directly by sends: no connection for a sender means
        # every send walks the any-sender plan.
        self._sender_counts = self._table.sender_counts
        self._update_fast()
        self.max_depth = max_depth
        """How deeply its sends may nest in its own receivers."""
        self._plans: dict[int, Plan] = {}
        self._seq = itertools.count()
        self._active = 0
        self._depth: ContextVar[int] = ContextVar(f"aiosignals_depth_{name}", default=0)
        if name is not None:
            registry[name] = self

    def _update_fast(self) -> None:
        # The defaults under which send() may take its shortest path.
        self._fast = (
            self._mode.__class__ is Sequential and self._errors == "raise" and self._timeout is None
        )
        self._update_fast_plan()

    def _update_fast_plan(self) -> None:
        # The plan a default send may walk without looking anything else up: every
        # receiver is plain and for ANY sender, and the policies are the defaults.
        plan = self._any_plan
        self._fast_plan = (
            plan
            if self._fast and plan is not None and plan.fns is not None and not self._sender_counts
            else None
        )

    @property
    def mode(self) -> Mode:
        """The default mode of its sends."""
        return self._mode

    @mode.setter
    def mode(self, mode: Mode) -> None:
        self._mode = check_mode(mode)
        self._update_fast()

    @property
    def errors(self) -> ErrorPolicy:
        """The default error policy of its sends."""
        return self._errors

    @errors.setter
    def errors(self, errors: ErrorPolicy) -> None:
        self._errors = check_errors(errors)
        self._update_fast()

    @property
    def timeout(self) -> float | None:
        """The default timeout of each receiver, in seconds, or ``None``."""
        return self._timeout

    @timeout.setter
    def timeout(self, timeout: float | None) -> None:
        self._timeout = check_timeout(timeout)
        self._update_fast()

    def __repr__(self) -> str:
        label = self.name or self.payload_type.__qualname__
        receivers = len(self._table.records)
        return f"<Signal {label}[{self.payload_type.__qualname__}] receivers={receivers}>"

    # -- connecting ----------------------------------------------------------------------

    @overload
    def connect(
        self,
        receiver: Callable[[Any, P], R],
        /,
        *,
        sender: Any = ...,
        weak: bool | None = ...,
        dispatch_uid: str | None = ...,
        priority: int = ...,
        once: bool = ...,
        timeout: float | None = ...,
        phase: Phase = ...,
        thread: bool = ...,
        durable: bool = ...,
        ordering: Ordering = ...,
        errors: ErrorPolicy | None = ...,
    ) -> Callable[[Any, P], R]: ...

    @overload
    def connect(
        self,
        receiver: None = None,
        /,
        *,
        sender: Any = ...,
        weak: bool | None = ...,
        dispatch_uid: str | None = ...,
        priority: int = ...,
        once: bool = ...,
        timeout: float | None = ...,
        phase: Phase = ...,
        thread: bool = ...,
        durable: bool = ...,
        ordering: Ordering = ...,
        errors: ErrorPolicy | None = ...,
    ) -> Callable[[Callable[[Any, P], R]], Callable[[Any, P], R]]: ...

    def connect(
        self,
        receiver: Callable[[Any, P], R] | None = None,
        /,
        *,
        sender: Any = ANY,
        weak: bool | None = None,
        dispatch_uid: str | None = None,
        priority: int = 0,
        once: bool = False,
        timeout: float | None = None,
        phase: Phase = Phase.IMMEDIATE,
        thread: bool = False,
        durable: bool = False,
        ordering: Ordering = "key",
        errors: ErrorPolicy | None = None,
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

        :param receiver: a coroutine function or plain callable taking ``(sender, payload)``
        :param sender: receive only the sends of this object (by identity), or :data:`ANY`
        :param weak: what the signal keeps alive. ``None`` (default) holds bound methods
            weakly, so a handler never keeps its instance alive and goes when the instance
            does, and holds everything else (functions, closures, lambdas, partials,
            callable objects) strongly, so a closure connected inside a function does not
            silently vanish. ``True`` holds any receiver weakly, as Django and blinker do:
            it is disconnected when nothing else references it. ``False`` holds any
            receiver strongly, bound methods included, until it is disconnected.
        :param dispatch_uid: a stable identifier: de-duplicates connections, names the
            receiver for ``disconnect`` and for the outbox (required with *durable*)
        :param priority: higher runs first; equal priorities run in connection order
        :param once: disconnect the receiver after its first delivery
        :param timeout: seconds this receiver may run; see :meth:`send`
        :param phase: when to run relative to the enclosing transaction (:class:`Phase`)
        :param thread: run a plain (non-async) receiver in a worker thread: a daemon
            thread, so a receiver still running never keeps the process from exiting. At
            most 40 receiver threads run at once per event loop, counting those whose send
            timed out or was cancelled and which still run (a send waits for a free one
            within its timeout). It is not an anyio worker thread: to call back into the
            event loop, pass ``anyio.from_thread.run`` a ``token`` taken with
            ``anyio.lowlevel.current_token()``.
        :param durable: deliver through the outbox, at least once (needs *dispatch_uid*,
            which then names this receiver only)
        :param ordering: the order a durable receiver's rows are delivered in: ``"key"``
            (default) keeps commit order per ordering key (the entity's class and primary
            key for a model signal, the payload's ``ordering_key`` attribute if it has one,
            else one key for the whole receiver), so rows of different keys are delivered
            side by side; ``"receiver"`` keeps strict commit order over all its rows
        :param errors: this receiver's own error policy (``"raise"``, ``"collect"`` or
            ``"log"``), used instead of the send's for it, in deferred phases too: an
            after-commit receiver with ``errors="log"`` never fails the request that
            committed
        :return: *receiver*, unchanged
        :raises TypeError: if *receiver* is not callable, cannot take ``(sender, payload)``
            (the message shows that form), or cannot be held weakly with ``weak=True``
        :raises ValueError: if *durable* is set without a *dispatch_uid*, if a different
            receiver would be connected (for another sender) under the *dispatch_uid* of a
            durable one, or a durable one under the uid of another receiver; if *timeout*
            is not a positive number of seconds or *errors* not a policy
        """
        if receiver is None:
            return functools.partial(
                self.connect,
                sender=sender,
                weak=weak,
                dispatch_uid=dispatch_uid,
                priority=priority,
                once=once,
                timeout=timeout,
                phase=phase,
                thread=thread,
                durable=durable,
                ordering=ordering,
                errors=errors,
            )
        check_receiver(receiver, self.payload_type)
        if ordering not in ("key", "receiver"):
            raise ValueError(f"ordering must be 'key' or 'receiver', not {ordering!r}")
        if durable and (not dispatch_uid or self.name is None):
            raise ValueError(
                f"durable receiver {receiver!r} needs a stable dispatch_uid on a named signal:"
                " the outbox finds it by those names after a restart"
            )
        is_async = is_async_callable(receiver)
        if thread and is_async:
            raise TypeError(f"thread=True is for plain functions; {receiver!r} is async")
        timeout = check_timeout(timeout, what="connect(timeout=...)")
        errors = None if errors is None else check_errors(errors)
        key = receiver_key(receiver)
        sender_id = None if sender is ANY else id(sender)
        if self._table.find(key, dispatch_uid, sender_id) is not None:
            return receiver  # Its key is connected: nothing new, whatever the receiver.
        if dispatch_uid is not None:
            self._table.check_durable_uid(self, receiver, key, dispatch_uid, durable=durable)
        if weak is None:
            weak = isinstance(receiver, types.MethodType)
        record = ReceiverRecord(
            None if weak else receiver,
            None,
            key=key,
            sender_id=sender_id,
            sender_ref=None,
            dispatch_uid=dispatch_uid,
            priority=priority,
            seq=next(self._seq),
            once=once,
            timeout=timeout,
            phase=phase,
            thread=thread,
            durable=durable,
            is_async=is_async,
            errors=errors,
            ordering=ordering,
        )
        self_ref = weakref.ref(self)

        def forget(dead: ReceiverRecord) -> None:
            # The receiver or its sender was collected; the signal may be gone as well.
            signal = self_ref()
            if signal is not None:
                signal._remove(dead)

        record.hold(receiver, sender, weak=weak, on_death=forget)
        self._table.add(record)
        self._invalidate()
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

        :param receiver: the receiver to disconnect
        :param sender: the sender it was connected for (:data:`ANY` by default)
        :param dispatch_uid: the uid it was connected under, instead of *receiver*
        :param all_senders: remove it for every sender (*sender* is then ignored)
        :return: whether a connection was removed
        :raises TypeError: if neither *receiver* nor *dispatch_uid* is given
        """
        if receiver is None and dispatch_uid is None:
            raise TypeError("disconnect() needs a receiver or a dispatch_uid")
        if all_senders:
            doomed = (
                self._table.with_uid(dispatch_uid)
                if dispatch_uid is not None
                else self._table.of_receiver(receiver_key(receiver))
            )
            for record in doomed:
                self._remove(record)
            return bool(doomed)
        found = self._table.find(
            None if receiver is None else receiver_key(receiver),
            dispatch_uid,
            None if sender is ANY else id(sender),
        )
        if found is None:
            return False
        self._remove(found)
        return True

    def _remove(self, record: ReceiverRecord) -> None:
        if self._table.remove(record):
            self._invalidate()

    def _invalidate(self) -> None:
        # Plans are immutable tuples: a send under way keeps the one it started with.
        self._any_plan = None
        self._fast_plan = None
        self._plans.clear()

    def _plan_for(self, sender: Any) -> Plan:
        sender_id = id(sender)
        if sender_id in self._sender_counts:
            plan = self._plans.get(sender_id)
            if plan is None:
                plan = Plan(self._table.for_sender(sender_id))
                self._plans[sender_id] = plan
            return plan
        plan = self._any_plan
        if plan is None:
            plan = Plan(self._table.for_sender(None))
            self._any_plan = plan
            self._update_fast_plan()
        return plan

    def _overridden(self, plan: Plan, sender: Any) -> Plan:
        override = _context.lookup(id(self))
        if override is None:
            return plan
        if override.mute_all:
            return EMPTY_PLAN
        sender_id = id(sender)
        extra = [r for r in override.extra if r.sender_id is None or r.sender_id == sender_id]
        records = sorted(
            (r for r in (*plan.records, *extra) if r.key not in override.muted_keys),
            key=lambda r: r.sort_key,
        )
        return Plan(tuple(records))

    def _current_plan(self, sender: Any) -> Plan:
        plan = self._plan_for(sender)
        return self._overridden(plan, sender) if _context.active else plan

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
        views = (record.view() for record in self._table.records)
        return tuple(view for view in views if view is not None)

    def _record_for_uid(self, dispatch_uid: str) -> ReceiverRecord | None:
        # The outbox relay's lookup: the durable receiver named by the uid (it names one
        # receiver only), else the first one connected under it.
        return self._table.named(dispatch_uid)

    # -- task-scoped overrides -----------------------------------------------------------

    def muted(self, *receivers: Callable[..., Any]) -> AbstractContextManager[None]:
        """
        Skip receivers of this signal in the current task (and the tasks it starts).

        With no arguments every receiver is skipped; otherwise only those given.
        A concurrent task still receives.

        :return: a context manager
        """
        return _context.override(
            id(self),
            mute_all=not receivers,
            muted_keys=frozenset(receiver_key(fn) for fn in receivers),
        )

    @contextmanager
    def connected_to(
        self, receiver: Callable[[Any, P], Any], sender: Any = ANY, *, priority: int = 0
    ) -> Generator[None]:
        """
        Connect *receiver* for the current task (and the tasks it starts) inside the block.

        :raises TypeError: if *receiver* cannot take ``(sender, payload)``
        """
        check_receiver(receiver)
        record = ReceiverRecord(
            receiver,
            None,
            key=receiver_key(receiver),
            sender_id=None if sender is ANY else id(sender),
            sender_ref=sender,
            dispatch_uid=None,
            priority=priority,
            seq=next(self._seq),
            once=False,
            timeout=None,
            phase=Phase.IMMEDIATE,
            thread=False,
            durable=False,
            is_async=is_async_callable(receiver),
        )
        with _context.override(id(self), extra=(record,)):
            yield

    # -- sending -------------------------------------------------------------------------

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
    ) -> list[tuple[Callable[..., Any], Any]]:
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

        Context: sequential receivers run in the sender's context (a ``ContextVar.set`` in
        one is seen by the next and by the sender); concurrent and ``thread=True``
        receivers each run in a copy, as tasks and threads do, a concurrent stage of one
        receiver too. A receiver connected for :data:`ANY` and
        for *sender* runs twice, as in Django.

        A receiver runs at most the smallest of the send's, its own and the signal's
        timeouts; past it the receiver fails with :class:`TimeoutError`.

        ``mode``, ``errors`` and ``timeout`` are options of the send: a payload with fields
        of those names has to be built first and passed whole.

        :param sender: who sends, positionally (Django's ``send(sender=...)`` keyword is
            an error here); receivers connected for another sender are skipped
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
            or _context.active
            or _tracing.observers
            or mode is not None
            or errors is not None
            or timeout is not None
        ):
            # Not the common case: find the plan for this sender and this task, and take
            # the general path unless the shortest one still applies.
            plan = None if self._sender_counts else self._any_plan
            if plan is None:
                plan = self._plan_for(sender)
            if _context.active:
                plan = self._overridden(plan, sender)
            if _tracing.observers:
                return await self._send_observed(plan, sender, payload, mode, errors, timeout)
            if (
                plan.fns is None
                or not self._fast
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

    async def _send_observed(
        self,
        plan: Plan,
        sender: Any,
        payload: P,
        mode: Mode | None,
        errors: ErrorPolicy | None,
        timeout: float | None,
    ) -> list[tuple[Callable[..., Any], Any]]:
        # Tracing or aiosignals.testing is on: every send is reported, one that reaches no
        # receiver too, and a test may have muted this signal in every task.
        observers = _tracing.observers
        if any(observer.mutes(self) for observer in observers):
            plan = EMPTY_PLAN
        with ExitStack() as stack:
            for observer in observers:
                stack.enter_context(observer.sending(self, sender, payload, len(plan.records)))
            if not plan.records:
                return []
            return await self._send_general(plan, sender, payload, mode, errors, timeout)

    async def _send_general(
        self,
        plan: Plan,
        sender: Any,
        payload: P,
        mode: Mode | None,
        errors: ErrorPolicy | None,
        timeout: float | None,
    ) -> list[tuple[Callable[..., Any], Any]]:
        # Recursion guard. Writing a context variable on every send costs more than the
        # rest of a one-receiver send, so the per-task depth is only tracked once a send of
        # this signal is already under way somewhere. An unrelated send overlapping
        # another may be counted one level too deep; a runaway loop is caught all the same.
        token = None
        if self._active:
            depth = self._depth.get() + 1
            if depth >= self.max_depth:
                loop = _recursion.receivers_on_stack(Signal)
                raise RecursionDepthError(
                    f"{self!r} was sent {depth + 1} levels deep inside its own receivers"
                    f" (max_depth={self.max_depth})"
                    + (f"; the receivers of the loop: {', '.join(loop)}" if loop else "")
                )
            token = self._depth.set(depth)
        self._active += 1
        try:
            errors = self._errors if errors is None else check_errors(errors)
            timeout = self._timeout if timeout is None else check_timeout(timeout)
            mode = self._mode if mode is None else check_mode(mode)
            if mode.__class__ is Sequential:
                return await self._send_sequential(
                    plan.records,
                    sender,
                    payload,
                    errors,
                    timeout,
                )
            assert isinstance(mode, Concurrent)
            return await self._send_concurrent(
                plan,
                sender,
                payload,
                errors,
                timeout,
                mode.limit,
            )
        finally:
            self._active -= 1
            if token is not None:
                self._depth.reset(token)

    async def _admit(
        self,
        record: ReceiverRecord,
        sender: Any,
        payload: Event,
        errors: ErrorPolicy,
        timeout: float | None,
        *,
        spend_later: bool = False,
    ) -> Callable[..., Any] | None:
        """Return the receiver to call now, or ``None`` if it is dead, spent or deferred."""
        fn = record.resolve()
        if fn is None or (record.once and record.fired):
            return None
        if record.phase is Phase.IMMEDIATE and not record.durable:
            # A concurrent send spends a once receiver when it starts it, not now: a
            # receiver that never starts (a failure or a cancellation first) stays.
            return fn if spend_later else self._spend(record, fn)
        scope = current_scope()
        if scope is None:
            # Autocommit: "after commit" is now; there is nothing to roll back.
            if record.phase is Phase.AFTER_ROLLBACK:
                return None
            return fn if spend_later else self._spend(record, fn)
        if record.durable and scope.durable_sink is not None:
            await scope.durable_sink(self, record, sender, payload)
            return None
        # A once receiver is spent when it runs, not now: the transaction may roll back.
        phase = Phase.AFTER_COMMIT if record.phase is Phase.IMMEDIATE else record.phase
        scope.defer(phase, self, record, sender, payload, errors, timeout)
        return None

    def _spend(self, record: ReceiverRecord, fn: Callable[..., Any]) -> Callable[..., Any] | None:
        """Return *fn*, marking a once receiver as used; ``None`` if it already was."""
        if record.once:
            if record.fired:
                return None
            # Marked before any await: a concurrent send sees it and skips the receiver.
            record.fired = True
            self._remove(record)
        return fn

    async def _invoke(
        self,
        record: ReceiverRecord,
        fn: Callable[..., Any],
        sender: Any,
        payload: Event,
        timeout: float | None,
    ) -> Any:
        # The outbox relay delivers a stored row through here: the receiver's own and
        # the given timeout apply, and its thread setting, as in a live send.
        return await invoke(self, record, fn, sender, payload, timeout)

    async def _send_sequential(
        self,
        records: tuple[ReceiverRecord, ...],
        sender: Any,
        payload: Event,
        errors: ErrorPolicy,
        timeout: float | None,
    ) -> list[tuple[Callable[..., Any], Any]]:
        results: list[tuple[Callable[..., Any], Any]] = []
        for record in records:
            fn = (
                record.fn
                if record.plain
                else await self._admit(record, sender, payload, errors, timeout)
            )
            if fn is None:
                continue
            results.append((fn, await guarded(self, record, fn, sender, payload, errors, timeout)))
        return results

    async def _send_concurrent(
        self,
        plan: Plan,
        sender: Any,
        payload: Event,
        errors: ErrorPolicy,
        timeout: float | None,
        limit: int | None,
    ) -> list[tuple[Callable[..., Any], Any]]:
        results: list[tuple[Callable[..., Any], Any]] = []
        if (
            plan.fns is not None
            and errors == "raise"
            and timeout is None
            and limit is None
            and not _tracing.wraps_receivers
            # A plan of single-receiver stages starts no task: any backend will do.
            and (plan.single or _fastpath.on_asyncio())
        ):
            # Plain receivers on asyncio: their coroutines go straight into the task group.
            for fns in plan.fn_stages:
                try:
                    if len(fns) == 1:
                        outcomes = [await _context.in_copy(fns[0](sender, payload))]
                    else:
                        outcomes = await _fastpath.run_group([fn(sender, payload) for fn in fns])
                except Exception as exc:  # noqa: BLE001 -- re-raised, grouped
                    raise grouped(self, exc) from None
                results.extend(zip(fns, outcomes, strict=True))
            return results
        for stage in plan.stages:
            calls: list[tuple[ReceiverRecord, Callable[..., Any]]] = []
            for record in stage:
                fn = (
                    record.fn
                    if record.plain
                    else await self._admit(
                        record, sender, payload, errors, timeout, spend_later=True
                    )
                )
                if fn is not None:
                    calls.append((record, fn))
            if not calls:
                continue
            try:
                if len(calls) == 1:
                    # One receiver needs no task: await it here, same semantics.
                    record, fn = calls[0]
                    outcomes = [
                        await _context.in_copy(
                            self._start(record, fn, sender, payload, errors, timeout)
                        )
                    ]
                else:
                    outcomes = await self._run_stage(calls, sender, payload, errors, timeout, limit)
            except Exception as exc:  # noqa: BLE001 -- re-raised, grouped
                raise grouped(self, exc) from None
            results.extend(
                (fn, outcome)
                for (_, fn), outcome in zip(calls, outcomes, strict=True)
                if outcome is not _SKIPPED
            )
        return results

    async def _start(
        self,
        record: ReceiverRecord,
        fn: Callable[..., Any],
        sender: Any,
        payload: Event,
        errors: ErrorPolicy,
        timeout: float | None,
    ) -> Any:
        """Run one receiver of a concurrent stage, spending it first if it is a once one."""
        if record.once and self._spend(record, fn) is None:
            return _SKIPPED  # Another send delivered it since this one admitted it.
        return await guarded(self, record, fn, sender, payload, errors, timeout)

    async def _run_stage(
        self,
        calls: list[tuple[ReceiverRecord, Callable[..., Any]]],
        sender: Any,
        payload: Event,
        errors: ErrorPolicy,
        timeout: float | None,
        limit: int | None,
    ) -> list[Any]:
        if limit is None or limit >= len(calls):
            if _fastpath.on_asyncio():
                if (
                    timeout is None
                    and errors == "raise"
                    and not _tracing.wraps_receivers
                    and all(r.plain for r, _ in calls)
                ):
                    return await _fastpath.run_group([fn(sender, payload) for _, fn in calls])
                return await _fastpath.run_group(
                    [self._start(r, fn, sender, payload, errors, timeout) for r, fn in calls]
                )
            limit = len(calls)

        return await run_limited(
            [
                functools.partial(self._start, r, fn, sender, payload, errors, timeout)
                for r, fn in calls
            ],
            limit,
        )

    async def _deliver_deferred(
        self,
        record: ReceiverRecord,
        sender: Any,
        payload: Event,
        *,
        veto: bool,
        errors: ErrorPolicy,
        timeout: float | None,
    ) -> Exception | None:
        """
        Call a receiver deferred to a transaction phase; return its failure to re-raise.

        *errors* and *timeout* are those of the send that deferred it; the receiver's own
        error policy, if it has one, comes first. A BEFORE_COMMIT failure always vetoes.
        After commit or rollback nobody can receive a result, so ``"collect"`` logs the
        failure like ``"log"`` and ``"raise"`` hands it back to be raised once the other
        receivers of the phase have run.
        """
        fn = record.resolve()
        if fn is None:
            return None
        fn = self._spend(record, fn)
        if fn is None:
            return None
        try:
            await invoke(self, record, fn, sender, payload, timeout)
        except Exception as exc:  # noqa: BLE001 -- handed back or logged
            if veto or (record.errors or errors) == "raise":
                return exc
            report(self, fn, exc, "log")
        return None
