from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Event"]


class Event(BaseModel):
    """
    Base class of signal payloads: a frozen pydantic model.

    Payloads are validated once, when the send builds them, and cannot be changed by a
    receiver afterwards, so every receiver of one send sees the same values. Unknown
    fields are an error, not silently dropped: ``send(sender, emial=...)`` fails.

    .. versionadded:: 0.1
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
