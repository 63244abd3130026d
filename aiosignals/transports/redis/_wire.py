"""
The wire format: what a stream entry holds, and how replies are read back.

An entry has the fields ``payload`` (the payload's pydantic JSON), ``sender`` (the sender's
label, :func:`aiosignals.models.sender_label`) and, when the publisher gave one, ``key`` (an
idempotency key). A dead letter keeps the original fields and adds :data:`DEAD_FIELDS`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias, cast

if TYPE_CHECKING:
    from redis.typing import EncodableT, FieldT

__all__ = [
    "DEAD_FIELDS",
    "Entry",
    "Fields",
    "Row",
    "claimed_rows",
    "dead_letter_fields",
    "entry_fields",
    "rows",
    "text",
]

Fields: TypeAlias = "dict[bytes | str, bytes | str]"
"""An entry's fields as redis-py returns them: bytes, or text with ``decode_responses``."""

Row: TypeAlias = "tuple[str, str, Fields | None]"
"""(stream, entry id, fields); ``None`` fields: the entry was trimmed from the stream since."""

# Fields a dead-letter entry adds; an original field of the same name is kept as original_<name>.
DEAD_FIELDS = ("error", "stream", "message_id", "deliveries", "group", "consumer")


def text(value: bytes | str | int) -> str:
    """Return *value* of a reply as text, whether the client decodes replies or not."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def entry_fields(payload: str, sender: str, key: str | None) -> dict[FieldT, EncodableT]:
    """Return the fields of the entry of one send."""
    fields: dict[FieldT, EncodableT] = {"payload": payload, "sender": sender}
    if key is not None:
        fields["key"] = key
    return fields


@dataclasses.dataclass(slots=True)
class Entry:
    """One entry read by a consumer, with how many times it has been delivered."""

    stream: str
    id: str
    fields: Fields | None  # None: trimmed from the stream since
    deliveries: int

    def field(self, name: str) -> str | None:
        """Return the field *name* as text, or ``None`` if the entry has none."""
        if self.fields is None:
            return None
        value = self.fields.get(name.encode())
        if value is None:
            value = self.fields.get(name)
        return None if value is None else text(value)


def dead_letter_fields(
    entry: Entry, error: str, group: str, consumer: str
) -> dict[FieldT, EncodableT]:
    """Return the fields of *entry*'s dead letter: its own, then the error and its origin."""
    fields: dict[FieldT, EncodableT] = {}
    for raw_name, value in (entry.fields or {}).items():
        name = text(raw_name)
        fields[f"original_{name}" if name in DEAD_FIELDS else raw_name] = value
    fields.update(
        error=error,
        stream=entry.stream,
        message_id=entry.id,
        deliveries=entry.deliveries,
        group=group,
        consumer=consumer,
    )
    return fields


def rows(reply: Any) -> list[Row]:
    """Flatten an XREADGROUP reply, RESP2 (a list) or RESP3 (a dict), to (stream, id, fields)."""
    if not reply:
        return []
    pairs: Iterable[Any] = (
        cast("Mapping[Any, Any]", reply).items() if isinstance(reply, dict) else reply
    )
    found: list[Row] = []
    for stream, items in cast("Iterable[tuple[bytes | str, Any]]", pairs):
        # RESP3 wraps each stream's entries in one more list.
        entries = items[0] if items and isinstance(items[0], list) else items
        for entry_id, fields in cast("list[tuple[bytes | str, Fields | None]]", entries):
            found.append((text(stream), text(entry_id), fields or None))
    return found


def claimed_rows(stream: str, claimed: Any) -> list[Row]:
    """Return the rows of an ``XCLAIM`` or ``XAUTOCLAIM`` reply's entries on *stream*."""
    return [
        (stream, text(entry_id), fields or None)
        for entry_id, fields in cast("list[tuple[bytes | str, Fields]]", claimed)
    ]
