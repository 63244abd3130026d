"""Tests of aiosignals.models helpers that do not need a database."""

from __future__ import annotations

import typing

import pytest
from pydantic import BaseModel, Field

from aiosignals import Event
from aiosignals.models import describe_invalid, load_payload


class Address(BaseModel):
    city: str


class Profile(Event):
    n: int
    scores: dict[str, int] = Field(default_factory=dict)
    homes: dict[str, Address] = Field(default_factory=dict)


@pytest.mark.parametrize(
    "raw",
    [
        '{"n": 1, "scores": {"sk-SECRET": "x"}}',
        '{"n": 1, "homes": {"sk-SECRET": {"town": "x"}}}',
    ],
)
def test_describe_invalid_never_quotes_a_dict_key_of_the_payload(raw: str) -> None:
    """A dict key is input, not a field name: the description hides it but names the field."""
    with pytest.raises(ValueError, match="validat") as caught:
        load_payload(Profile, None, raw)
    text = describe_invalid(Profile, caught.value)
    assert "SECRET" not in text
    assert text.startswith("payload does not validate as Profile: ")
    assert "scores." in text or "homes." in text


def test_describe_invalid_keeps_nested_field_names_and_indexes() -> None:
    """Field names of nested models stay in the description: they are the schema, not data."""
    with pytest.raises(ValueError, match="validat") as caught:
        load_payload(Profile, None, '{"n": "s3cret", "homes": {"k": {}}}')
    text = describe_invalid(Profile, caught.value)
    assert "n: Input should be a valid integer" in text
    assert ".city: Field required (missing)" in text
    assert "s3cret" not in text


class Node(Event):
    label: typing.Annotated[str, Field(min_length=1)]
    children: tuple[Node, ...] = ()


def test_describe_invalid_handles_a_recursive_annotated_model() -> None:
    """A model that holds itself, with Annotated metadata, is described without looping."""
    with pytest.raises(ValueError, match="validat") as caught:
        load_payload(Node, None, '{"label": "a", "children": [{"label": ""}]}')
    assert "children.0.label: String should have at least 1 character" in describe_invalid(
        Node, caught.value
    )
