"""
The receivers of one signal: its connections and the plans its sends walk.

:class:`Receivers` keeps a signal's connections (through
:class:`~aiosignals._connections.ConnectionTable`) and caches, per sender, the
:class:`Plan` a send walks: the receivers in call order and the runner picked for them
once, when the plan is built. Any change of the connections or of the signal's send
options drops the cached plans; a send under way keeps the plan it started with.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._connections import ConnectionTable
from ._options import ANY, ConnectOptions, SendOptions, check_priority
from ._policies import invoke
from ._records import ReceiverRecord, check_receiver, is_async_callable, receiver_key
from ._runners import pick_runner, run_sequential

if TYPE_CHECKING:
    from ._event import Event
    from ._overrides import Override
    from ._records import Connection
    from ._runners import Runner
    from ._signal import Signal

__all__ = ["DurableReceiver", "Plan", "Receivers"]


class Plan:
    """The ordered receivers one send walks, and the runner picked for them; immutable."""

    __slots__ = (
        "_fn_stages",
        "_stages",
        "fns",
        "nones",
        "options",
        "plain",
        "records",
        "runner",
    )

    def __init__(self, records: tuple[ReceiverRecord, ...], options: SendOptions) -> None:
        self.records = records
        self.options = options
        # Every record is a strongly held coroutine function with no options: the send
        # loop can call them without per-receiver checks.
        self.plain = all(record.plain for record in records)
        self.fns: tuple[Callable[..., Any], ...] | None = (
            tuple(record.fn for record in records if record.fn is not None) if self.plain else None
        )
        # The results of a send whose receivers all return None (most do), ready to copy.
        self.nones: list[tuple[Callable[..., Any], None]] = [(fn, None) for fn in self.fns or ()]
        self.runner: Runner | None = pick_runner(self.plain, options)
        """The runner of a send under *options*; ``None`` for the send's own inline loop."""
        self._stages: tuple[tuple[ReceiverRecord, ...], ...] | None = None
        self._fn_stages: tuple[tuple[Callable[..., Any], ...], ...] | None = None

    def runner_for(self, options: SendOptions, *, wrapped: bool) -> Runner:
        """
        Return the runner of a send of this plan under *options*.

        :param wrapped: whether an observer wraps each receiver call (tracing): the plain
            shortcuts, which call receivers as they are, do not apply then
        """
        runner = (
            self.runner
            if options is self.options and not wrapped
            else pick_runner(self.plain and not wrapped, options)
        )
        # The inline loop stands for run_sequential outside the send's shortest path.
        return run_sequential if runner is None else runner

    @property
    def fn_stages(self) -> tuple[tuple[Callable[..., Any], ...], ...]:
        """The receivers of a plain plan grouped by priority, for the concurrent fast path."""
        if self._fn_stages is None:
            self._fn_stages = tuple(
                tuple(r.fn for r in stage if r.fn is not None) for stage in self.stages
            )
        return self._fn_stages

    @property
    def stages(self) -> tuple[tuple[ReceiverRecord, ...], ...]:
        """The records grouped by priority, highest first: the stages of a concurrent send."""
        if self._stages is None:
            self._stages = tuple(
                tuple(group)
                for _, group in itertools.groupby(self.records, key=lambda r: r.priority)
            )
        return self._stages


EMPTY_PLAN = Plan((), SendOptions())
"""The plan of a send that reaches no receiver."""


@dataclass(frozen=True, slots=True)
class DurableReceiver:
    """A durable receiver connected in this process, as the outbox relay delivers to it."""

    signal: Signal[Any]
    """Its signal."""
    record: ReceiverRecord
    """Its connection."""
    receiver: Callable[..., Any]
    """The receiver itself."""

    async def deliver(self, sender: Any, payload: Event) -> Any:
        """Call the receiver as a live send would: its and the signal's timeout, its thread."""
        return await invoke(
            self.signal, self.record, self.receiver, sender, payload, self.signal.timeout
        )


class Receivers:
    """
    The connections of one signal and the plans its sends walk, cached per sender.

    :param options: the signal's send options, which each plan picks its runner for
    :param on_plan: told the plan of every send when no connection is for a particular
        sender (``None`` otherwise, or until it is built) whenever that changes; the
        signal keeps it where its send reads it first
    """

    __slots__ = (
        "__weakref__",
        "_any_plan",
        "_detach",
        "_notify",
        "_plans",
        "_seq",
        "_table",
        "options",
    )

    def __init__(self, options: SendOptions, on_plan: Callable[[Plan | None], None]) -> None:
        self._table = ConnectionTable()
        self.options = options
        """The signal's send options (see :meth:`set_options`)."""
        self._notify = on_plan
        self._plans: dict[int, Plan] = {}
        self._any_plan: Plan | None = None
        self._seq = itertools.count()
        self_ref = weakref.ref(self)

        def detach(record: ReceiverRecord) -> None:
            # A spent once receiver, or a collected receiver or sender: the registry may
            # be gone as well.
            receivers = self_ref()
            if receivers is not None:
                receivers.remove(record)

        self._detach = detach

    def set_options(self, options: SendOptions) -> None:
        """Replace the signal's send options, dropping the plans made for the old ones."""
        self.options = options
        self._invalidate()

    def __len__(self) -> int:
        return len(self._table.records)

    def connect(
        self, signal: Signal[Any], receiver: Callable[..., Any], options: ConnectOptions
    ) -> None:
        """
        Connect *receiver* to *signal* with *options*, unless its key is connected already.

        :raises TypeError: see :meth:`Signal.connect <aiosignals.Signal.connect>`
        :raises ValueError: see :meth:`Signal.connect <aiosignals.Signal.connect>`
        """
        check_receiver(receiver, signal.payload_type)
        dispatch_uid = options.dispatch_uid
        if options.durable and (not dispatch_uid or signal.name is None):
            raise ValueError(
                f"durable receiver {receiver!r} needs a stable dispatch_uid on a named signal:"
                " the outbox finds it by those names after a restart"
            )
        if options.thread and is_async_callable(receiver):
            raise TypeError(f"thread=True is for plain functions; {receiver!r} is async")
        options.checked()
        key = receiver_key(receiver)
        sender_id = None if options.sender is ANY else id(options.sender)
        if self._table.find(key, dispatch_uid, sender_id) is not None:
            return  # Its key is connected: nothing new, whatever the receiver.
        if dispatch_uid is not None:
            self._table.check_durable_uid(
                signal, receiver, key, dispatch_uid, durable=options.durable
            )
        record = ReceiverRecord(receiver, options, seq=next(self._seq), detach=self._detach)
        self._table.add(record)
        self._invalidate()

    def task_scoped(
        self, receiver: Callable[..., Any], sender: Any, priority: int
    ) -> ReceiverRecord:
        """
        Return a record for a task-scoped connection (``connected_to``): not in the table.

        :raises TypeError: if *receiver* cannot take ``(sender, payload)``
        """
        check_receiver(receiver)
        check_priority(priority, what="connected_to(priority=...)")
        options = ConnectOptions(sender=sender, weak=False, priority=priority)
        return ReceiverRecord(receiver, options, seq=next(self._seq))

    def disconnect(
        self,
        receiver: Callable[..., Any] | None,
        sender: Any,
        dispatch_uid: str | None,
        *,
        all_senders: bool,
    ) -> bool:
        """Disconnect as :meth:`Signal.disconnect <aiosignals.Signal.disconnect>` does."""
        if receiver is None and dispatch_uid is None:
            raise TypeError("disconnect() needs a receiver or a dispatch_uid")
        if all_senders:
            doomed = (
                self._table.with_uid(dispatch_uid)
                if dispatch_uid is not None
                else self._table.of_receiver(receiver_key(receiver))
            )
            for record in doomed:
                self.remove(record)
            return bool(doomed)
        found = self._table.find(
            None if receiver is None else receiver_key(receiver),
            dispatch_uid,
            None if sender is ANY else id(sender),
        )
        if found is None:
            return False
        self.remove(found)
        return True

    def remove(self, record: ReceiverRecord) -> None:
        """Remove the connection of *record*, if it is still there."""
        if self._table.remove(record):
            self._invalidate()

    def _invalidate(self) -> None:
        # Plans are immutable tuples: a send under way keeps the one it started with.
        self._any_plan = None
        self._plans.clear()
        self._notify(None)

    def plan_for(self, sender: Any) -> Plan:
        """Return the plan of a send from *sender*: its own connections and the ANY ones."""
        counts = self._table.sender_counts
        if counts:
            sender_id = id(sender)
            if sender_id in counts:
                plan = self._plans.get(sender_id)
                if plan is None:
                    plan = Plan(self._table.for_sender(sender_id), self.options)
                    self._plans[sender_id] = plan
                return plan
        plan = self._any_plan
        if plan is None:
            plan = Plan(self._table.for_sender(None), self.options)
            self._any_plan = plan
            if not counts:
                self._notify(plan)
        return plan

    def overridden(self, plan: Plan, sender: Any, override: Override) -> Plan:
        """Return *plan* with the task-scoped *override* of the current task applied."""
        if override.mute_all:
            return EMPTY_PLAN
        sender_id = id(sender)
        extra = [r for r in override.extra if r.sender_id is None or r.sender_id == sender_id]
        records = sorted(
            (r for r in (*plan.records, *extra) if r.key not in override.muted_keys),
            key=lambda r: r.sort_key,
        )
        return Plan(tuple(records), self.options)

    def connections(self) -> tuple[Connection, ...]:
        """Every live connection, in call order."""
        views = (record.view() for record in self._table.records)
        return tuple(view for view in views if view is not None)

    def durable(self, signal: Signal[Any], dispatch_uid: str) -> DurableReceiver | None:
        """
        Return the receiver the outbox delivers *dispatch_uid*'s rows to, if it is alive.

        The durable receiver named by the uid (it names one receiver only), else the first
        one connected under it.
        """
        record = self._table.named(dispatch_uid)
        fn = None if record is None else record.resolve()
        if record is None or fn is None:
            return None
        return DurableReceiver(signal, record, fn)
