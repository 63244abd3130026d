"""Event: the base of payloads, frozen as pydantic freezes models (#11)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from aiosignals import Event


class Tagged(Event):
    name: str
    tags: tuple[str, ...] = ()
    labels: frozenset[str] = frozenset()


class Listed(Event):
    items: list[str]


def test_fields_cannot_be_reassigned() -> None:
    """Assigning a field of an event raises pydantic's ValidationError."""
    event = Tagged(name="a")
    with pytest.raises(ValidationError, match="frozen"):
        event.name = "b"  # type: ignore[misc]
    assert event.name == "a"


def test_tuple_and_frozenset_fields_make_an_event_immutable_and_hashable() -> None:
    """With tuple and frozenset fields nothing in an event can change; equal events hash alike."""
    event = Tagged(name="a", tags=("x", "y"), labels=frozenset({"z"}))
    assert event.tags == ("x", "y")
    assert event.labels == frozenset({"z"})
    assert hash(event) == hash(Tagged(name="a", tags=("x", "y"), labels=frozenset({"z"})))


def test_the_freeze_is_shallow_a_list_field_can_still_be_changed_in_place() -> None:
    """As documented, the freeze stops at the fields: a list field can be changed in place."""
    event = Listed(items=["a"])
    event.items.append("b")
    assert event.items == ["a", "b"]
    with pytest.raises(TypeError):
        hash(event)
