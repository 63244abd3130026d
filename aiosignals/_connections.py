"""
The connections of one signal, kept and indexed as Django keys them.

A connection's key is ``(dispatch_uid, sender)`` when a uid was given and
``(receiver, sender)`` otherwise; connecting under a key already connected is a no-op.
The table also keeps every connection made under each uid (the outbox finds a durable
receiver by its uid alone) and how many connections each sender has (a signal whose
receivers are all for any sender takes the shortest send path).
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._records import ReceiverRecord

__all__ = ["ConnectionTable"]


def _key(receiver_key: object, dispatch_uid: str | None, sender_id: int | None) -> tuple[Any, ...]:
    # A uid is stored as ("dispatch_uid", uid), which no receiver key (an int or a pair of
    # ints) can equal.
    connection = receiver_key if dispatch_uid is None else ("dispatch_uid", dispatch_uid)
    return (connection, sender_id)


class ConnectionTable:
    """The connections of one signal: in call order, by key, by uid, counted by sender."""

    __slots__ = ("_by_key", "_by_uid", "records", "sender_counts")

    def __init__(self) -> None:
        self.records: list[ReceiverRecord] = []
        """Every connection, higher priority first, then in connection order."""
        self.sender_counts: dict[int, int] = {}
        """How many connections each sender (by id) has; empty when all are for ANY."""
        self._by_key: dict[tuple[Any, ...], ReceiverRecord] = {}
        self._by_uid: dict[str, list[ReceiverRecord]] = {}

    def find(
        self, receiver_key: object, dispatch_uid: str | None, sender_id: int | None
    ) -> ReceiverRecord | None:
        """Return the connection of this key, if there is one."""
        return self._by_key.get(_key(receiver_key, dispatch_uid, sender_id))

    def check_durable_uid(
        self,
        signal: object,
        receiver: Callable[..., Any],
        receiver_key: object,
        dispatch_uid: str,
        *,
        durable: bool,
    ) -> None:
        """
        Refuse a new connection under *dispatch_uid* that would make it name two receivers.

        :raises ValueError: if *receiver* is not the receiver already connected under a
            durable uid, or is durable under a uid another receiver is connected under
        """
        # The outbox finds a durable receiver by its uid alone: two receivers under one
        # durable uid would make a stored row deliverable to either.
        same_uid = self._by_uid.get(dispatch_uid, [])
        others = [r for r in same_uid if r.key != receiver_key and r.resolve() is not None]
        if others and (durable or any(r.durable for r in same_uid)):
            held = next((r for r in others if r.durable), others[0])
            named = "the durable receiver" if held.durable else "the receiver"
            new = "the durable receiver " if durable and not held.durable else ""
            raise ValueError(
                f"dispatch_uid {dispatch_uid!r} of {signal!r} already names {named}"
                f" {held.resolve()!r}; {new}{receiver!r} cannot be connected under it: a"
                " durable receiver's uid names that receiver only (the outbox delivers stored"
                " rows by it). Pick another dispatch_uid."
            )

    def add(self, record: ReceiverRecord) -> None:
        """Add a connection whose key is not connected yet."""
        if record.sender_id is not None:
            self.sender_counts[record.sender_id] = self.sender_counts.get(record.sender_id, 0) + 1
        bisect.insort(self.records, record, key=lambda r: r.sort_key)
        self._by_key[_key(record.key, record.dispatch_uid, record.sender_id)] = record
        if record.dispatch_uid is not None:
            self._by_uid.setdefault(record.dispatch_uid, []).append(record)

    def remove(self, record: ReceiverRecord) -> bool:
        """Remove a connection; return ``False`` if it was already gone."""
        key = _key(record.key, record.dispatch_uid, record.sender_id)
        if self._by_key.get(key) is not record:
            return False  # A once receiver and a collected weak one can race here.
        del self._by_key[key]
        if record.dispatch_uid is not None:
            same_uid = self._by_uid[record.dispatch_uid]
            same_uid.remove(record)
            if not same_uid:
                del self._by_uid[record.dispatch_uid]
        if record.sender_id is not None:
            left = self.sender_counts[record.sender_id] - 1
            if left:
                self.sender_counts[record.sender_id] = left
            else:
                del self.sender_counts[record.sender_id]
        index = bisect.bisect_left(self.records, record.sort_key, key=lambda r: r.sort_key)
        del self.records[index]
        return True

    def of_receiver(self, receiver_key: object) -> list[ReceiverRecord]:
        """Return every connection of a receiver, whatever its sender and uid."""
        return [r for r in self.records if r.key == receiver_key]

    def with_uid(self, dispatch_uid: str) -> list[ReceiverRecord]:
        """Return every connection made under *dispatch_uid*, in connection order."""
        return list(self._by_uid.get(dispatch_uid, ()))

    def named(self, dispatch_uid: str) -> ReceiverRecord | None:
        """Return the durable connection under *dispatch_uid*, else the first one, or ``None``."""
        same_uid = self._by_uid.get(dispatch_uid)
        if not same_uid:
            return None
        return next((r for r in same_uid if r.durable), same_uid[0])

    def for_sender(self, sender_id: int | None) -> tuple[ReceiverRecord, ...]:
        """Return, in call order, what a send from this sender reaches (None: ANY ones only)."""
        return tuple(r for r in self.records if r.sender_id is None or r.sender_id == sender_id)
