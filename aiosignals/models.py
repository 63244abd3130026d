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
import functools
import importlib
import typing
from typing import Any, Generic

from pydantic import BaseModel, ConfigDict, PydanticUserError, TypeAdapter, field_serializer
from pydantic_core import from_json, to_json

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


def dump_payload(payload: Event) -> str:
    """
    Return the JSON a payload travels as, through the outbox or a stream.

    :class:`~aiosignals.Event`'s config makes it exact: NaN and the infinities are
    written as the tokens ``NaN``, ``Infinity`` and ``-Infinity`` (as Python's
    :mod:`json` writes them) and bytes as base64, so :func:`load_payload` gives back
    what was sent.

    :raises TypeError: if a value has no JSON form (pydantic cannot serialise it)
    """
    try:
        return payload.model_dump_json()
    except (TypeError, ValueError) as exc:  # pydantic's PydanticSerializationError is a ValueError
        raise TypeError(f"cannot serialise a {type(payload).__qualname__}: {exc}") from exc


def dump_entity(entity: object) -> dict[str, Any]:
    """
    Return the stored fields of *entity*, for the outbox and transports.

    Understands SQLAlchemy mapped instances (their column attributes), pydantic models and
    dataclasses; anything else is refused with a clear error rather than half-serialised.
    Values stay Python values: the payload's JSON encoding (see :func:`dump_payload`)
    writes them, and :func:`load_entity` reads them back by the fields' types.
    """
    mapper = getattr(type(entity), "__mapper__", None)
    if getattr(type(entity), "__table__", None) is not None and mapper is not None:
        return {
            attr.key: getattr(entity, attr.key)
            for attr in mapper.column_attrs
            if attr.key in entity.__dict__
        }
    if isinstance(entity, BaseModel):
        return entity.model_dump(round_trip=True)
    if dataclasses.is_dataclass(entity) and not isinstance(entity, type):
        return dataclasses.asdict(entity)
    raise TypeError(
        f"cannot serialise a {type(entity).__qualname__}: an entity must be a pydantic model,"
        " a dataclass or an SQLAlchemy mapped instance"
    )


# How entity fields are read back: the same encoding as Event's, so bytes (base64) and
# NaN or the infinities come back exactly.
_FIELD_CONFIG = ConfigDict(val_json_bytes="base64", ser_json_bytes="base64")


@functools.lru_cache(maxsize=1024)
def _field_adapter(annotation: Any) -> TypeAdapter[Any]:
    try:
        return TypeAdapter(annotation, config=_FIELD_CONFIG)
    except PydanticUserError:
        # A model or dataclass type keeps its own config: pydantic refuses another one.
        return TypeAdapter(annotation)


def _load_field(annotation: Any, value: Any) -> Any:
    """Validate a field's JSON value as *annotation*, as it would be from the JSON text."""
    if value is None or annotation is None or annotation is Any or annotation is object:
        return value
    try:
        adapter = _field_adapter(annotation)
    except TypeError:  # an unhashable annotation (Annotated metadata): not cached
        adapter = TypeAdapter(annotation)
    # From JSON, not from Python: a base64 string is decoded into bytes, not encoded.
    return adapter.validate_json(to_json(value, inf_nan_mode="constants"))


def _field_types(entity_type: type[Any]) -> dict[str, Any]:
    if issubclass(entity_type, BaseModel):
        return {name: field.annotation for name, field in entity_type.model_fields.items()}
    if dataclasses.is_dataclass(entity_type):
        try:
            hints = typing.get_type_hints(entity_type)
        except (NameError, TypeError):  # annotations that do not resolve: read as given
            return {}
        return {field.name: hints.get(field.name) for field in dataclasses.fields(entity_type)}
    return {}


def load_entity(entity_type: type[M], data: dict[str, Any]) -> M:
    """
    Rebuild an entity of *entity_type* from what :func:`dump_entity` returned, as JSON.

    Values are validated into the declared field types (a datetime comes back as a
    datetime, not as the string JSON made of it; bytes from their base64 text).

    :raises pydantic.ValidationError: if *data* does not fit the entity's fields
    """
    mapper = getattr(entity_type, "__mapper__", None)
    if mapper is None:
        types = _field_types(entity_type)
        fields = {name: _load_field(types.get(name), value) for name, value in data.items()}
        return TypeAdapter(entity_type).validate_python(fields)
    # Mapped classes may refuse some columns in __init__ (init=False keys): build the
    # instance the way the ORM loads rows, then set each column to its validated value.
    entity: M = mapper.class_manager.new_instance()
    for attr in mapper.column_attrs:
        if attr.key not in data:
            continue
        setattr(entity, attr.key, _load_field(_column_type(attr.columns[0].type), data[attr.key]))
    return entity


def _column_type(column_type: Any) -> Any:
    # Only mapped entities get here, so SQLAlchemy is installed.
    from sqlalchemy import JSON

    # A JSON column holds whatever JSON holds, whatever python_type says (dict).
    if isinstance(column_type, JSON):
        return None
    try:
        return column_type.python_type
    except NotImplementedError:
        return None


def load_payload(payload_type: type[Event], sender: Any, text: str) -> Event:
    """
    Validate payload JSON (see :func:`dump_payload`) into *payload_type*.

    A model signal's instance travels as its fields (:func:`dump_entity`); when *sender* is
    the entity class it is rebuilt as an instance of it, so a receiver sees the same kind
    of payload as in a live send.

    :raises ValueError: if *text* does not fit *payload_type* (pydantic's ValidationError
        is a ValueError); retrying will not change that
    """
    if not (isinstance(sender, type) and ModelEvent in payload_type.__mro__):
        return payload_type.model_validate_json(text)
    try:
        data = from_json(text)
        fields = {name: field.annotation for name, field in payload_type.model_fields.items()}
        payload = {
            name: _load_field(fields.get(name), value)
            for name, value in data.items()
            if name != "instance"
        }
        payload["instance"] = load_entity(sender, data["instance"])
        return payload_type.model_validate(payload)
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
