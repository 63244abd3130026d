"""
What the relay and the ``aiosignals outbox`` command need of the place rows are kept.

:class:`OutboxStore` is the protocol; :class:`~aiosignals.outbox.SQLAlchemyOutboxStore`
keeps the rows in the outbox table (all of the outbox's SQL is there), and
:class:`~aiosignals.outbox.MemoryOutboxStore` in a dict, for tests. Writing a row is not
part of the protocol: it joins the transaction of the entity, which only the store of that
database knows how to do.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..models import ModelEvent, dump_payload, dump_sender, import_path

if TYPE_CHECKING:
    from .._event import Event
    from .._records import ReceiverRecord
    from .._signal import Signal
    from .._types import Ordering

__all__ = [
    "DEAD",
    "PENDING",
    "OutboxRow",
    "OutboxStore",
    "Outcomes",
    "PendingReceiver",
    "new_row",
    "ordering_key",
]

PENDING = "pending"
DEAD = "dead"


@dataclass(slots=True)
class OutboxRow:
    """
    One durable receiver's call, as stored.

    .. versionadded:: 0.2
    """

    id: int
    """Never reused: the idempotency key of the delivery."""
    dispatch_uid: str
    """The receiver's ``dispatch_uid``."""
    signal: str
    """The signal's name."""
    sender: str
    """The sender, as :func:`aiosignals.models.dump_sender` stores it."""
    payload: str
    """The payload's JSON."""
    ordering_key: str = ""
    """
    Rows of one receiver and one ordering key are delivered in commit order; ``""`` for a
    receiver connected with ``ordering="receiver"`` (all its rows in one order).
    """
    status: str = PENDING
    """``"pending"`` or ``"dead"``."""
    attempts: int = 0
    """Times a relay started the receiver on it."""
    failures: int = 0
    """Times the receiver failed on it (the other attempts died with their relay)."""
    created_at: float = 0.0
    """When it was written, in seconds since the epoch."""
    available_at: float = 0.0
    """When it is due (after a failure: when it is retried)."""
    locked_until: float | None = None
    """When the lease of the relay holding it runs out."""
    locked_by: str | None = None
    """The name of the relay holding it."""
    last_error: str | None = None
    """The last failure, in full."""
    receiver: str | None = None
    """``module:qualname`` of the receiver when the row was written."""


@dataclass(slots=True)
class Outcomes:
    """
    What became of the rows of a batch since the relay last wrote it down.

    .. versionadded:: 0.2
    """

    done: list[int] = field(default_factory=list[int])
    """Delivered: deleted."""
    failed: list[tuple[int, float, str]] = field(default_factory=list[tuple[int, float, str]])
    """(id, due again at, error): one more failure, retried later."""
    dead: list[tuple[int, str, bool]] = field(default_factory=list[tuple[int, str, bool]])
    """(id, error, whether it counts as a failure): parked as dead."""
    unmarked: list[int] = field(default_factory=list[int])
    """Marked as started but never started: given back with that attempt taken back."""
    released: list[int] = field(default_factory=list[int])
    """Given back untouched."""

    def __bool__(self) -> bool:
        return bool(self.done or self.failed or self.dead or self.unmarked or self.released)

    def extend(self, other: Outcomes) -> None:
        """Add the outcomes of *other* to these."""
        self.done.extend(other.done)
        self.failed.extend(other.failed)
        self.dead.extend(other.dead)
        self.unmarked.extend(other.unmarked)
        self.released.extend(other.released)


@dataclass(frozen=True, slots=True)
class PendingReceiver:
    """
    The pending rows of one ``dispatch_uid``, for a relay's warning about them.

    .. versionadded:: 0.2
    """

    dispatch_uid: str
    """The receiver's ``dispatch_uid``."""
    signal: str
    """The name of the signal of its rows."""
    receiver: str | None
    """The receiver's ``module:qualname`` when a row was written, if known."""
    count: int
    """How many rows are pending."""


class OutboxStore(Protocol):
    """
    Where outbox rows are kept: what a relay and the ``aiosignals outbox`` command need.

    Every time is in seconds since the epoch, as the caller's clock gives it. A row is
    *due* when it is pending, its ``available_at`` has come and no unexpired lease holds
    it. Methods given a relay's name change only rows leased to that relay: a relay that
    lost its lease changes nothing.

    .. versionadded:: 0.2
    """

    @property
    def name(self) -> str:
        """The name of the database, in :attr:`Delivery.key <aiosignals.outbox.Delivery.key>`."""
        ...

    async def claim(
        self,
        relay: str,
        *,
        now: float,
        lease: float,
        limit: int,
        skip: Collection[str],
        mark: Callable[[Sequence[OutboxRow]], Collection[int]],
    ) -> list[OutboxRow]:
        """
        Lease to *relay* until ``now + lease`` up to *limit* due rows, in id order.

        A row is not handed out while an earlier row of its receiver and ordering key is
        leased or backing off (that keeps each key's commit order), nor rows of the
        ``dispatch_uid`` s in *skip*. In the same transaction, ``attempts`` is raised for
        the rows *mark* picks of those claimed.

        :return: the rows, as they were before *mark*
        """
        ...

    async def renew(self, relay: str, ids: Collection[int], until: float) -> None:
        """Extend *relay*'s leases of *ids* until *until*."""
        ...

    async def finish(self, relay: str, outcomes: Outcomes, mark: Collection[int]) -> bool:
        """
        Write *outcomes* and raise ``attempts`` of the rows *mark*, in one transaction.

        :return: whether every row of *mark* was still leased to *relay*
        """
        ...

    async def pending_receivers(self) -> list[PendingReceiver]:
        """Return each ``dispatch_uid`` with pending rows, and how many it has."""
        ...

    async def rows(
        self, *, status: str | None = None, ids: Collection[int] = ()
    ) -> list[OutboxRow]:
        """Return the rows in id order: of *status* (any if ``None``), and of *ids* if given."""
        ...

    async def requeue(self, ids: Collection[int], now: float) -> int:
        """Make dead rows (of *ids* if given) pending and due at *now*, attempts reset."""
        ...

    async def purge(self, ids: Collection[int]) -> int:
        """Delete dead rows (of *ids* if given); return how many."""
        ...


def receiver_path(record: ReceiverRecord) -> str | None:
    """Return ``module:qualname`` of *record*'s receiver, or ``None`` once it is gone."""
    fn = record.resolve()
    if fn is None:
        return None
    # Bound methods name their function; callable objects their class.
    target: object = getattr(fn, "__func__", fn)
    named: object = target if hasattr(target, "__qualname__") else type(target)
    return f"{getattr(named, '__module__', '?')}:{getattr(named, '__qualname__', '?')}"


def ordering_key(payload: Event, ordering: Ordering) -> str:
    """
    Return the key whose rows a durable receiver connected with *ordering* gets in order.

    With ``ordering="key"``: the payload's own ``ordering_key`` (a field or property an
    :class:`~aiosignals.Event` may declare) when it is not ``None``; for a model signal's
    payload, the entity's class and primary key (the aggregate); otherwise ``""``, the
    receiver's one key, as with ``ordering="receiver"``.
    """
    if ordering == "receiver":
        return ""
    declared: object = getattr(payload, "ordering_key", None)
    if declared is not None:
        return _storable(str(declared))
    if isinstance(payload, ModelEvent):
        # Read as an object: the entity type of a payload is only known to its signal.
        instance: object = payload.__dict__["instance"]
        key = _entity_key(instance)
        if key is not None:
            return _storable(f"{import_path(type(instance))}:{key}")
    return ""


# Longer keys are stored as their digest: 4 bytes a character at most stays well inside
# PostgreSQL's limit on an index entry (about 2.7 kB).
_MAX_KEY = 500


def _storable(key: str) -> str:
    """Return *key*, or its digest if PostgreSQL cannot store or index it as it is."""
    # An index entry holds at most ~2.7 kB and text no NUL: either failed the send. One
    # key still gives one digest, so its rows keep their order.
    if len(key) <= _MAX_KEY and "\x00" not in key:
        return key
    return f"sha256:{hashlib.sha256(key.encode('utf-8', 'surrogatepass')).hexdigest()}"


def _entity_key(instance: object) -> str | None:
    """Return the primary key of *instance* as text, or ``None`` if it has none (yet)."""
    mapper: Any = getattr(type(instance), "__mapper__", None)
    if mapper is not None and hasattr(type(instance), "__table__"):
        values: list[object] = list(mapper.primary_key_from_instance(instance))
    else:
        values = [getattr(instance, "id", None)]
    if any(value is None for value in values):
        return None
    return ",".join(map(str, values))


def new_row(
    signal: Signal[Any],
    dispatch_uid: str,
    sender: Any,
    payload: Event,
    now: float,
    *,
    ordering: Ordering = "key",
    receiver: str | None = None,
    where: str = "the outbox",
) -> dict[str, Any]:
    """
    Return the fields of the row that stores a call of *dispatch_uid*, written at *now*.

    :param ordering: the receiver's ``ordering`` (see :func:`ordering_key`)
    :param receiver: the receiver's ``module:qualname``, for the hint of a relay without it
    :param where: the store, as the error message names it
    :raises TypeError: if the payload or the sender cannot be stored (the message names
        the signal and the receiver: it is raised from a save, far from them)
    """
    assert signal.name is not None  # checked when a durable receiver connects
    try:
        text = dump_payload(payload)
        stored_sender = dump_sender(sender)
    except TypeError as exc:
        raise TypeError(
            f"cannot write the send of signal {signal.name!r} to {where} for the durable"
            f" receiver {dispatch_uid!r}: {exc}"
        ) from exc
    return {
        "dispatch_uid": dispatch_uid,
        "signal": signal.name,
        "sender": stored_sender,
        "payload": text,
        "ordering_key": ordering_key(payload, ordering),
        "status": PENDING,
        "attempts": 0,
        "failures": 0,
        "receiver": receiver,
        "created_at": now,
        "available_at": now,
    }
