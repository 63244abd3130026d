from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Event"]


class Event(BaseModel):
    """
    Base class of signal payloads: a frozen pydantic model.

    Payloads are validated once, when the send builds them, and their fields cannot be
    reassigned by a receiver afterwards. Unknown fields are an error, not silently dropped:
    ``send(sender, emial=...)`` fails.

    The freeze is pydantic's, and shallow: it stops at the fields. A ``list``, ``set`` or
    ``dict`` field is the same mutable object for every receiver of one send, so one
    receiver's ``payload.items.append(...)`` is seen by the next. Declare collection fields
    as ``tuple[...]``, ``frozenset[...]`` (pydantic converts lists and sets given to them),
    or a ``Mapping`` you do not change, to make a payload immutable and hashable.

    Payloads travel (through the outbox and streams) as their JSON, and come back equal:
    NaN and the infinities are written as the tokens ``NaN``, ``Infinity`` and
    ``-Infinity`` (as Python's :mod:`json` writes them, where pydantic's default writes
    ``null``), and ``bytes`` as base64. A nested model that is not an event writes its
    bytes as its own config says (pydantic's default, UTF-8, refuses other bytes with an
    error at the send): derive it from :class:`Event`, or give it
    ``ser_json_bytes="base64"`` and ``val_json_bytes="base64"``, to carry any bytes.

    .. versionadded:: 0.1
    """

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        ser_json_inf_nan="constants",
        ser_json_bytes="base64",
        val_json_bytes="base64",
    )
