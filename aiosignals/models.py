"""
Model signals: ``pre_save``, ``post_save``, ``pre_delete`` and ``post_delete``.

The repositories of :mod:`aiosignals.repository` send them around every write, with the
entity class as the sender, so receivers read as the Django code they replace::

    @receiver(post_save, sender=User)
    async def create_profile(sender: type[User], payload: PostSave[User]) -> None:
        if payload.created:
            ...
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from typing import Any, Generic

from pydantic import BaseModel, ConfigDict, TypeAdapter, field_serializer

from ._event import Event
from ._signal import Signal
from ._types import M

__all__ = [
    "ModelEvent",
    "PostDelete",
    "PostSave",
    "PreDelete",
    "PreSave",
    "post_delete",
    "post_save",
    "pre_delete",
    "pre_save",
]


def dump_entity(entity: object) -> dict[str, Any]:
    """
    Return the stored fields of *entity* as a JSON-ready dict, for the outbox and transports.

    Understands pydantic models, dataclasses and SQLAlchemy mapped instances (their column
    attributes); anything else is refused with a clear error rather than half-serialised.
    """
    if isinstance(entity, BaseModel):
        return entity.model_dump(mode="json")
    if dataclasses.is_dataclass(entity) and not isinstance(entity, type):
        return dataclasses.asdict(entity)
    table = getattr(type(entity), "__table__", None)
    mapper = getattr(type(entity), "__mapper__", None)
    if table is not None and mapper is not None:
        return {
            attr.key: getattr(entity, attr.key)
            for attr in mapper.column_attrs
            if attr.key in entity.__dict__
        }
    raise TypeError(
        f"cannot serialise a {type(entity).__qualname__}: an entity must be a pydantic model,"
        " a dataclass or an SQLAlchemy mapped instance"
    )


def load_entity(entity_type: type[M], data: dict[str, Any]) -> M:
    """
    Rebuild an entity of *entity_type* from what :func:`dump_entity` returned.

    Values are validated into the declared field types (a datetime comes back as a
    datetime, not as the string JSON made of it).

    :raises pydantic.ValidationError: if *data* does not fit the entity's fields
    """
    mapper = getattr(entity_type, "__mapper__", None)
    if mapper is None:
        return TypeAdapter(entity_type).validate_python(data)
    # Mapped classes may refuse some columns in __init__ (init=False keys): build the
    # instance the way the ORM loads rows, then set each column to its validated value.
    entity: M = mapper.class_manager.new_instance()
    for attr in mapper.column_attrs:
        if attr.key not in data:
            continue
        value = data[attr.key]
        try:
            python_type = attr.columns[0].type.python_type
        except NotImplementedError:
            python_type = None
        if python_type is not None and value is not None:
            value = TypeAdapter(python_type).validate_python(value)
        setattr(entity, attr.key, value)
    return entity


def load_payload(payload_type: type[Event], sender: Any, text: str) -> Event:
    """
    Validate payload JSON (from the outbox or a stream) into *payload_type*.

    A model signal's instance travels as its fields (:func:`dump_entity`); when *sender* is
    the entity class it is rebuilt as an instance of it, so a receiver sees the same kind
    of payload as in a live send.

    :raises ValueError: if *text* does not fit *payload_type* (pydantic's ValidationError
        is a ValueError); retrying will not change that
    """
    if not (isinstance(sender, type) and ModelEvent in payload_type.__mro__):
        return payload_type.model_validate_json(text)
    try:
        data = json.loads(text)
        data["instance"] = load_entity(sender, data["instance"])
        return payload_type.model_validate(data)
    except (TypeError, KeyError) as exc:
        raise ValueError(f"not a {payload_type.__qualname__} payload: {exc!r}") from exc


def import_path(obj: Any) -> str:
    """Return ``module:qualname`` of a class or function, for storing a sender by name."""
    return f"{obj.__module__}:{obj.__qualname__}"


def resolve_path(path: str) -> Any:
    """Import the object named by ``module:qualname``."""
    module_name, _, qualname = path.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


class ModelEvent(Event, Generic[M]):
    """
    The base of the model signals' payloads: an entity and the database it lives in.

    .. versionadded:: 0.1
    """

    # Entities are the user's own classes (dataclasses, mapped classes): stored as given,
    # never copied or coerced, so a receiver sees the very object that was saved.
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    instance: M
    """The entity saved or deleted."""

    using: str = "default"
    """The name of the database (or repository store) written to."""

    @field_serializer("instance")
    def _serialize_instance(self, instance: M) -> dict[str, Any]:
        return dump_entity(instance)


class PreSave(ModelEvent[M], Generic[M]):
    """
    Sent before an entity is written; a receiver that raises vetoes the write.

    .. versionadded:: 0.1
    """

    created: bool
    """Whether the write will insert a new row (as opposed to updating one)."""

    update_fields: frozenset[str] | None = None
    """The fields the write is limited to, or ``None`` for all of them."""


class PostSave(ModelEvent[M], Generic[M]):
    """
    Sent once an entity has been written (inside its transaction, if there is one).

    .. versionadded:: 0.1
    """

    created: bool
    """True exactly when the write inserted a new row."""

    update_fields: frozenset[str] | None = None
    """The fields the write was limited to, or ``None`` for all of them."""

    previous: dict[str, Any] | None = None
    """
    For an update by an instrumented session's flush: each changed field's value before
    the change (``None`` for a value that was never loaded). ``None`` where it is not known:
    inserts, and writes through a repository.

    .. versionadded:: 0.2
    """


class PreDelete(ModelEvent[M], Generic[M]):
    """
    Sent before an entity is deleted; a receiver that raises vetoes the delete.

    .. versionadded:: 0.1
    """


class PostDelete(ModelEvent[M], Generic[M]):
    """
    Sent once an entity has been deleted.

    .. versionadded:: 0.1
    """


pre_save: Signal[PreSave[Any]] = Signal(PreSave, name="aiosignals.pre_save")
"""Sent by repositories before each write. The sender is the entity class."""

post_save: Signal[PostSave[Any]] = Signal(PostSave, name="aiosignals.post_save")
"""Sent by repositories after each write. The sender is the entity class."""

pre_delete: Signal[PreDelete[Any]] = Signal(PreDelete, name="aiosignals.pre_delete")
"""Sent by repositories before each delete. The sender is the entity class."""

post_delete: Signal[PostDelete[Any]] = Signal(PostDelete, name="aiosignals.post_delete")
"""Sent by repositories after each delete. The sender is the entity class."""
