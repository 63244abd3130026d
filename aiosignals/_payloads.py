"""
What ``send()`` accepts as a payload, and the errors it gives for what it does not.

The common cases (a payload of exactly the signal's type, or its fields) are handled
inline by :meth:`Signal.send <aiosignals.Signal.send>`; the rest comes here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from ._event import Event

__all__ = ["coerce", "no_sender"]

_E = TypeVar("_E", bound="Event")


def _is_parametrisation(cls: type[Event], base: type[Event]) -> bool:
    """Return whether *cls* is *base* parametrised (``PostSave[User]`` of ``PostSave``)."""
    metadata: dict[str, Any] = getattr(cls, "__pydantic_generic_metadata__", None) or {}
    return metadata.get("origin") is base and not cls.model_fields.keys() - base.model_fields.keys()


def coerce(payload_type: type[_E], payload: object, fields: dict[str, Any]) -> _E:
    """
    Return *payload* as an instance of *payload_type* itself.

    A subclass instance becomes the payload type, built from its fields: receivers typed
    for the payload type get that type, and the outbox stores only its fields. The values
    are handed over as they are (an entity stays the very object), then validated. A
    parametrised generic of the payload type (``PostSave[User]``) passes unchanged.

    :raises TypeError: if fields are given with a payload
    :raises pydantic.ValidationError: if *payload* does not validate as *payload_type*
    """
    if fields:
        raise TypeError(f"send() takes a payload or its fields, not both: {sorted(fields)}")
    if isinstance(payload, payload_type):
        if _is_parametrisation(type(payload), payload_type):
            return payload
        values = {name: getattr(payload, name) for name in payload_type.model_fields}
        return payload_type.model_validate(values)
    # Raises pydantic's ValidationError, with the expected type named in it.
    return payload_type.model_validate(payload)


def no_sender(signal: object, fields: dict[str, Any]) -> TypeError:
    """Return the error for a send without a positional sender (Django's ``sender=``)."""
    given = ", ".join(f"{name}=..." for name in fields if name != "sender")
    return TypeError(
        f"{signal!r}.send() takes the sender as its first positional argument:"
        f" send(Sender, {given or 'payload'}) rather than Django's"
        f" send(sender=Sender, {given or '...'})"
    )
