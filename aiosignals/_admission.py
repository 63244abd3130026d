"""
Whether a receiver runs now, and the deferred call that runs it when its phase comes.

A receiver may be dead, spent, deferred to a transaction phase, or written to the outbox
instead of running now. A runner asks :func:`admit` about every receiver that is not
plain (plain ones run now by construction). A deferred receiver is queued on the current
:class:`~aiosignals._phases.PhaseScope` as a call that carries everything it needs, so
the scope knows nothing of signals or records.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._options import Phase
from ._phases import current_scope
from ._policies import invoke, report
from .exceptions import RecursionDepthError

if TYPE_CHECKING:
    from ._event import Event
    from ._records import ReceiverRecord
    from ._signal import Signal
    from ._types import ErrorPolicy

__all__ = ["admit"]

# The depth of deferred deliveries nested in each other, per signal (by id).
_deferred_depth: ContextVar[dict[int, int]] = ContextVar("aiosignals_deferred_depth", default={})  # noqa: B039 -- never mutated, replaced


async def admit(
    signal: Signal[Any],
    record: ReceiverRecord,
    sender: Any,
    payload: Event,
    errors: ErrorPolicy,
    timeout: float | None,
    *,
    spend_later: bool = False,
) -> Callable[..., Any] | None:
    """
    Return the receiver of *record* to call now, or ``None`` if it is dead, spent or deferred.

    :param spend_later: leave a ``once`` receiver unspent: a concurrent send spends it when
        it starts it, so a receiver that never starts (a failure or a cancellation first)
        stays connected
    """
    fn = record.resolve()
    if fn is None or (record.once and record.fired):
        return None
    if record.phase is Phase.IMMEDIATE and not record.durable:
        return fn if spend_later or record.spend() else None
    scope = current_scope()
    if scope is None:
        # Autocommit: "after commit" is now; there is nothing to roll back.
        if record.phase is Phase.AFTER_ROLLBACK:
            return None
        return fn if spend_later or record.spend() else None
    if record.durable and scope.durable_sink is not None:
        await scope.durable_sink(signal, record, sender, payload)
        return None
    # A once receiver is spent when it runs, not now: the transaction may roll back.
    phase = Phase.AFTER_COMMIT if record.phase is Phase.IMMEDIATE else record.phase
    scope.defer(phase, _Deferred(signal, record, sender, payload, errors, timeout))
    return None


@dataclass(frozen=True, slots=True)
class _Deferred:
    """A receiver call deferred to a transaction phase, carrying what the call needs."""

    signal: Signal[Any]
    record: ReceiverRecord
    sender: Any
    payload: Event
    errors: ErrorPolicy  # the policy of the send that deferred it
    timeout: float | None  # the timeout of that send

    async def __call__(self, veto: bool) -> Exception | None:
        """
        Call a receiver deferred to a transaction phase; return its failure to re-raise.

        The receiver's own error policy, if it has one, comes before the send's. A
        BEFORE_COMMIT failure always vetoes. After commit or rollback nobody can receive a
        result, so ``"collect"`` logs the failure like ``"log"`` and ``"raise"`` hands it
        back to be raised once the other receivers of the phase have run.
        """
        # A deferred receiver runs after its send returned, so the send's own recursion
        # guard no longer counts it: an AFTER_COMMIT receiver that saves its entity again
        # would commit and run again until Python's RecursionError. The depth of deferred
        # deliveries nested in each other is counted here, per signal, against max_depth.
        signal, record = self.signal, self.record
        depths = _deferred_depth.get()
        depth = depths.get(id(signal), 0) + 1
        if depth > signal.max_depth:
            return RecursionDepthError(
                f"the receiver {record.resolve()!r} of {signal!r} ran {depth} levels deep"
                " inside its own deferred deliveries"
                f" (max_depth={signal.max_depth}): a {record.phase.value} receiver keeps"
                " causing the send that defers it again"
            )
        fn = record.resolve()
        if fn is None or not record.spend():
            return None
        token = _deferred_depth.set({**depths, id(signal): depth})
        try:
            await invoke(signal, record, fn, self.sender, self.payload, self.timeout)
        except Exception as exc:  # noqa: BLE001 -- handed back or logged
            if veto or (record.errors or self.errors) == "raise":
                return exc
            report(signal, fn, exc, "log")
        finally:
            _deferred_depth.reset(token)
        return None
