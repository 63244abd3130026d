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
import sys
import types
import typing
import weakref
from typing import Any, Generic, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    PydanticUserError,
    TypeAdapter,
    ValidationError,
    field_serializer,
)
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

    It is exact, so :func:`load_payload` gives back what was sent: NaN and the infinities
    are written as the tokens ``NaN``, ``Infinity`` and ``-Infinity`` (as Python's
    :mod:`json` writes them; pydantic's own default is ``null``), also in nested models,
    and bytes as base64 (:class:`~aiosignals.Event`'s config).

    :raises TypeError: if a value has no JSON form (pydantic cannot serialise it)
    """
    try:
        # In JSON mode pydantic keeps NaN and the infinities as floats (only its JSON
        # writer turns them into null), whatever the nested models' config says.
        data = payload.model_dump(mode="json", round_trip=True)
        return to_json(data, inf_nan_mode="constants").decode()
    except (TypeError, ValueError) as exc:  # pydantic's PydanticSerializationError is a ValueError
        raise TypeError(f"cannot serialise a {type(payload).__qualname__}: {exc}") from exc


def dump_entity(entity: object) -> dict[str, Any]:
    """
    Return the stored fields of *entity* as JSON values, for the outbox and transports.

    Understands SQLAlchemy mapped instances (their loaded column attributes), pydantic
    models and dataclasses; anything else is refused with a clear error rather than
    half-serialised. A pydantic model is written as its own JSON (its config and
    serialisers decide). The fields of the others are written by their declared types (a
    column's ``python_type``, a dataclass field's annotation), as :func:`load_entity`
    reads them back: bytes as base64. NaN and the infinities stay floats, which
    :func:`dump_payload` writes as JSON tokens.

    :raises TypeError: for an entity of another kind
    """
    if isinstance(entity, BaseModel):
        return entity.model_dump(mode="json", round_trip=True, by_alias=True)
    entity_type = type(entity)
    fields = _entity_fields(entity_type)
    if fields is None:
        raise TypeError(
            f"cannot serialise a {entity_type.__qualname__}: an entity must be a pydantic"
            " model, a dataclass or an SQLAlchemy mapped instance"
        )
    mapped = _mapper(entity_type) is not None
    return {
        name: _dump_field(annotation, getattr(entity, name))
        for name, annotation in fields.items()
        # A mapped instance travels with the columns it has loaded (as the row was read).
        if not mapped or name in entity.__dict__
    }


def load_entity(entity_type: type[M], data: dict[str, Any]) -> M:
    """
    Rebuild an entity of *entity_type* from the JSON of what :func:`dump_entity` returned.

    Values are validated into the declared field types (a datetime comes back as a
    datetime, not as the string JSON made of it; bytes from their base64 text).

    :raises pydantic.ValidationError: if *data* does not fit the entity's fields
    """
    kind: type[Any] = entity_type  # M is unbounded: say that the class is hashable
    if issubclass(kind, BaseModel):
        # Read as the model's own JSON (its config and validators), as it was written.
        return cast("M", kind.model_validate_json(to_json(data, inf_nan_mode="constants")))
    fields = _entity_fields(kind) or {}
    values = {name: _load_field(fields.get(name), value) for name, value in data.items()}
    mapper = _mapper(kind)
    if mapper is None:
        entity_: M = _adapter_of(kind).validate_python(values)
        return entity_
    # Mapped classes may refuse some columns in __init__ (init=False keys): build the
    # instance the way the ORM loads rows, then set each column to its validated value.
    entity: M = mapper.class_manager.new_instance()
    for name in fields:
        if name in values:
            setattr(entity, name, values[name])
    return entity


def _mapper(entity_type: type[Any]) -> Any:
    if getattr(entity_type, "__table__", None) is None:
        return None
    return getattr(entity_type, "__mapper__", None)


_FIELDS: weakref.WeakKeyDictionary[type[Any], dict[str, Any] | None] = weakref.WeakKeyDictionary()


def _entity_fields(entity_type: type[Any]) -> dict[str, Any] | None:
    """Return each stored field's declared type (``None``: any JSON), or ``None`` if unknown."""
    try:
        return _FIELDS[entity_type]
    except KeyError:
        fields = _FIELDS[entity_type] = _find_fields(entity_type)
        return fields


def _find_fields(entity_type: type[Any]) -> dict[str, Any] | None:
    mapper = _mapper(entity_type)
    if mapper is not None:
        return {attr.key: _column_type(attr.columns[0].type) for attr in mapper.column_attrs}
    if dataclasses.is_dataclass(entity_type):
        try:
            hints = typing.get_type_hints(entity_type)
        except (NameError, TypeError):  # annotations that do not resolve: values as given
            hints = {}
        return {field.name: hints.get(field.name) for field in dataclasses.fields(entity_type)}
    return None


def _column_type(column_type: Any) -> Any:
    # Only mapped entities get here, so SQLAlchemy is installed.
    from sqlalchemy import JSON

    # A JSON column holds whatever JSON holds, whatever python_type says (dict).
    if isinstance(column_type, JSON):
        return None
    try:
        python_type = column_type.python_type
    except NotImplementedError:
        return None
    return None if python_type is object else python_type


# An entity's fields are written and read with the same encoding as Event's: bytes as
# base64 (UTF-8, pydantic's default, cannot hold every byte string).
_FIELD_CONFIG = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")


_ADAPTERS: weakref.WeakKeyDictionary[type[Any], TypeAdapter[Any]] = weakref.WeakKeyDictionary()


def _adapter_of(entity_type: type[Any]) -> TypeAdapter[Any]:
    adapter = _ADAPTERS.get(entity_type)
    if adapter is None:
        adapter = _ADAPTERS[entity_type] = TypeAdapter(entity_type)
    return adapter


@functools.lru_cache(maxsize=1024)
def _field_adapter(annotation: Any) -> TypeAdapter[Any] | None:
    try:
        # In a one-tuple: pydantic refuses a config for a dataclass type itself, and a
        # dataclass (at any depth) takes the config of the adapter it is validated in.
        # Models keep their own config, for writing and reading alike.
        one_tuple: Any = types.GenericAlias(tuple, (annotation,))
        return TypeAdapter(one_tuple, config=_FIELD_CONFIG)
    except (PydanticUserError, NameError):  # an annotation pydantic cannot use: as given
        return None


def _adapter_for(annotation: Any) -> TypeAdapter[Any] | None:
    if annotation is None or annotation is Any:
        return None
    try:
        return _field_adapter(annotation)
    except TypeError:  # an unhashable annotation (Annotated metadata) is not cached
        return _field_adapter.__wrapped__(annotation)


def _dump_field(annotation: Any, value: Any) -> Any:
    adapter = None if value is None else _adapter_for(annotation)
    if adapter is None:
        return value  # written as pydantic infers it
    # warnings=False: a value of another type than declared is written as inferred.
    return adapter.dump_python((value,), mode="json", round_trip=True, warnings=False)[0]


def _load_field(annotation: Any, value: Any) -> Any:
    adapter = None if value is None else _adapter_for(annotation)
    if adapter is None:
        return value
    # From JSON, not from Python: a base64 string is decoded into bytes, not encoded.
    return adapter.validate_json(to_json((value,), inf_nan_mode="constants"))[0]


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
        fields = payload_type.model_fields
        # The other fields were written by the payload's serialiser, so they are read as
        # JSON (bytes from base64), field by field: the instance is not JSON's to validate.
        payload = {
            name: _load_field(fields[name].annotation if name in fields else None, value)
            for name, value in data.items()
            if name != "instance"
        }
        payload["instance"] = load_entity(sender, data["instance"])
        return payload_type.model_validate(payload)
    except (TypeError, KeyError) as exc:
        raise ValueError(f"not a {payload_type.__qualname__} payload: {exc!r}") from exc


def describe_invalid(payload_type: type[Event], exc: ValueError) -> str:
    """
    Say why a payload does not validate as *payload_type*, naming fields, never values.

    pydantic's message quotes each bad input; this text goes to logs and dead letters,
    which travel further than the payload itself, so a token or an e-mail address in a
    payload must not ride along.
    """
    head = f"payload does not validate as {payload_type.__qualname__}"
    if not isinstance(exc, ValidationError):
        return f"{head}: {exc}"  # ours or the JSON parser's: a position, not a value
    # A location also holds the payload's dict keys, which are input: only the names of
    # fields (and list indexes) are shown, any other part as "*".
    names = _field_names(payload_type, set[int]())
    problems = [
        f"{'.'.join(_shown(part, names) for part in error['loc']) or '(payload)'}:"
        f" {error['msg']} ({error['type']})"
        for error in exc.errors(include_url=False, include_input=False, include_context=False)
    ]
    return f"{head}: {'; '.join(problems)}"


def _shown(part: str | int, names: set[str]) -> str:
    return str(part) if isinstance(part, int) or part in names else "*"


def _field_names(annotation: object, seen: set[int]) -> set[str]:
    """Return the field names and aliases of every model that *annotation* may hold."""
    if id(annotation) in seen:  # a model that holds itself; Annotated metadata may not hash
        return set()
    seen.add(id(annotation))
    names: set[str] = set()
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for name, field in annotation.model_fields.items():
            names |= {
                name,
                *(a for a in (field.alias, field.validation_alias) if isinstance(a, str)),
            }
            names |= _field_names(field.annotation, seen)
    for arg in typing.get_args(annotation):
        names |= _field_names(arg, seen)
    return names


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


def sender_label(sender: Any) -> str:
    """
    Return how *sender* travels in a message; :func:`resolve_sender` reads it back.

    :func:`import_path` for a class, ``""`` for ``None``, else ``str(sender)``. Not
    :func:`dump_sender`'s stored form: a message's label is the stream entries' documented
    format, and a consumer must never import a module because a message names it, where the
    outbox relay imports the senders its own process stored.

    :param sender: the sender of a send
    """
    if sender is None:
        return ""
    if isinstance(sender, type):
        return import_path(sender)
    return str(sender)


def resolve_sender(label: str) -> Any:
    """
    Return the sender a consumer passes on for *label* (see :func:`sender_label`).

    A ``module:qualname`` label whose module is already imported in this process and names a
    class gives that class back, so receivers connected for ``sender=ThatClass`` receive it.
    Modules are never imported on behalf of a message. ``""`` gives ``None``; anything else
    stays the string.
    """
    if not label:
        return None
    module_name, colon, qualname = label.partition(":")
    module = sys.modules.get(module_name) if colon else None
    if module is None:
        return label
    value: Any = module
    for part in qualname.split("."):
        value = getattr(value, part, None)
        if value is None:
            return label
    return value if isinstance(value, type) else label


def dump_sender(sender: Any) -> str:
    """
    Return how a sender is stored to be found again: ``none:``, ``str:<text>`` or ``py:<path>``.

    A class or function is stored by its import path (``py:module:qualname``), a string as
    itself, ``None`` as ``none:``: the prefix tells them apart, so :func:`load_sender`
    gives back exactly what was stored, even a string that looks like a path.

    :raises TypeError: for a sender that cannot be stored and found again
    """
    if sender is None:
        return "none:"
    if isinstance(sender, str):
        return f"str:{sender}"
    if isinstance(sender, type) or callable(sender):
        path = import_path(sender)
        if "<locals>" in path:
            raise TypeError(
                f"the sender {sender!r} is defined inside a function, so another process"
                " cannot import it: define it at module level"
            )
        return f"py:{path}"
    raise TypeError(
        f"a stored sender must be a class, a function, a string or None, not {sender!r}"
    )


def load_sender(stored: str) -> Any:
    """
    Return the sender :func:`dump_sender` stored as *stored*, importing its module if needed.

    :raises LookupError: if a stored class or function cannot be imported any more
    """
    kind, _, value = stored.partition(":")
    if kind == "none":
        return None
    if kind == "str":
        return value
    try:
        return resolve_path(value)
    except (ImportError, AttributeError) as exc:
        raise LookupError(f"cannot import the sender {value!r}: {exc}") from exc


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
