"""
The values a signal, a connection and a send are configured with, checked once.

:data:`ANY`, :class:`Phase`, the modes, the error policies and :class:`ConnectOptions`
(the options of ``connect``, written out once). Each check runs when its value is
given (at ``Signal()``, ``connect()`` or ``send()``), so a bad value is an error at the
first moment it is known rather than a failure at every send. A leaf: this module imports
nothing of the package, so every other module may import it.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeAlias, TypedDict

if TYPE_CHECKING:
    from ._types import ErrorPolicy, Ordering

__all__ = [
    "ANY",
    "POLICIES",
    "Concurrent",
    "ConnectKwargs",
    "ConnectOptions",
    "Mode",
    "Phase",
    "SendOptions",
    "Sequential",
    "check_errors",
    "check_max_depth",
    "check_mode",
    "check_priority",
    "check_timeout",
    "connect_options",
]


class _AnySender:
    """The type of :data:`ANY`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ANY"

    def __reduce__(self) -> str:
        return "ANY"


ANY: Final[Any] = _AnySender()
"""
Connect a receiver with ``sender=ANY`` (the default) to receive the sends of every sender.

.. versionadded:: 0.1
"""


class Phase(enum.Enum):
    """
    When a receiver runs relative to the transaction its signal was sent in.

    .. versionadded:: 0.1
    """

    IMMEDIATE = "immediate"
    """During the send, as any receiver (the default)."""

    BEFORE_COMMIT = "before_commit"
    """Just before the transaction commits; raising vetoes the commit."""

    AFTER_COMMIT = "after_commit"
    """Once the transaction has committed; never on rollback. At once outside a transaction."""

    AFTER_ROLLBACK = "after_rollback"
    """Once the transaction (or savepoint) has rolled back; never outside a transaction."""


@dataclass(frozen=True, slots=True)
class Sequential:
    """
    Await the receivers one after another, in priority order.

    .. versionadded:: 0.1
    """


@dataclass(frozen=True, slots=True)
class Concurrent:
    """
    Run the receivers of each priority concurrently, one priority after another.

    All receivers of the highest priority run in one task group; the next priority starts
    only when that group has finished, so a receiver at priority 10 is done before any
    receiver at priority 0 begins.

    :param limit: the most receivers running at once, or ``None`` for no limit

    .. versionadded:: 0.1
    """

    limit: int | None = None

    def __post_init__(self) -> None:
        if self.limit is None:
            return
        if isinstance(self.limit, bool) or not isinstance(self.limit, int):  # pyright: ignore[reportUnnecessaryIsInstance] -- often from untyped config
            raise TypeError(f"Concurrent(limit=...) must be an integer or None, got {self.limit!r}")
        if self.limit < 1:
            raise ValueError(f"Concurrent(limit=...) must be at least 1, got {self.limit}")


Mode: TypeAlias = Sequential | Concurrent
"""How a send runs its receivers."""

POLICIES: Final = ("raise", "collect", "log")
"""The error policies a signal, a send or a receiver may have."""


def check_errors(errors: object) -> ErrorPolicy:
    """
    Return *errors* if it is an error policy.

    :raises ValueError: otherwise
    """
    if errors not in POLICIES:
        raise ValueError(f"errors must be one of {POLICIES}, got {errors!r}")
    return errors


def check_timeout(timeout: object, *, what: str = "timeout") -> float | None:
    """
    Return *timeout* if it is ``None`` or a positive number of seconds.

    :raises TypeError: if it is not a number
    :raises ValueError: if it is zero, negative or NaN (every receiver would fail)
    """
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"{what} must be a number of seconds or None, got {timeout!r}")
    # NaN compares false with everything, so `timeout <= 0` alone lets it through.
    if math.isnan(timeout) or timeout <= 0:
        raise ValueError(f"{what} must be a positive number of seconds or None, got {timeout!r}")
    return timeout


def check_count(value: object, *, what: str) -> int:
    """
    Return *value* if it is an integer of at least 1 (a size, a count, a limit).

    :raises TypeError: if it is not an integer (a bool too, often from untyped config)
    :raises ValueError: if it is below 1
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{what} must be at least 1, got {value}")
    return value


def check_seconds(value: object, *, what: str, zero: bool = False) -> float:
    """
    Return *value* if it is a finite number of seconds, above zero (or zero, if *zero*).

    :raises TypeError: if it is not a number (a bool too)
    :raises ValueError: if it is out of range, infinite or NaN (NaN fails every comparison)
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number of seconds, got {value!r}")
    if not ((value >= 0) if zero else (value > 0)) or not value < math.inf:
        bound = "zero or more" if zero else "more than zero"
        raise ValueError(f"{what} must be a finite number of seconds, {bound}, got {value!r}")
    return value


def check_mode(mode: object) -> Mode:
    """
    Return *mode* if it is a ``Sequential()`` or ``Concurrent(...)`` instance.

    :raises TypeError: for the classes themselves, strings and anything else
    """
    if isinstance(mode, Sequential | Concurrent):
        return mode
    if mode is Sequential or mode is Concurrent:
        hint = f"{mode.__name__}()"
    else:
        hint = "Sequential() or Concurrent(limit=...)"
    raise TypeError(f"mode must be an instance such as {hint}, got {mode!r}")


def check_max_depth(max_depth: object) -> int:
    """
    Return *max_depth* if it is an integer of at least 1.

    :raises TypeError: if it is not an integer
    :raises ValueError: if it is below 1
    """
    if isinstance(max_depth, bool) or not isinstance(max_depth, int):
        raise TypeError(f"max_depth must be an integer, got {max_depth!r}")
    if max_depth < 1:
        raise ValueError(f"max_depth must be at least 1, got {max_depth}")
    return max_depth


def check_priority(priority: object, *, what: str = "connect(priority=...)") -> int:
    """
    Return *priority* if it is an integer.

    :raises TypeError: otherwise (a bool too: ``True`` is a mistake, not priority 1)
    """
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"{what} must be an integer, got {priority!r}")
    return priority


class ConnectKwargs(TypedDict, total=False):
    """
    The keyword arguments of ``connect`` and ``@receiver``, for type checkers.

    The same names as :class:`ConnectOptions`, which holds their defaults.
    """

    sender: Any
    weak: bool | None
    dispatch_uid: str | None
    priority: int
    once: bool
    timeout: float | None
    phase: Phase
    thread: bool
    durable: bool
    ordering: Ordering
    errors: ErrorPolicy | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectOptions:
    """
    The options of one connection, with their defaults.

    :meth:`Signal.connect <aiosignals.Signal.connect>` documents them; ``connect`` and
    ``@receiver`` build one from their keyword arguments and hand it on whole.
    """

    sender: Any = ANY
    weak: bool | None = None
    dispatch_uid: str | None = None
    priority: int = 0
    once: bool = False
    timeout: float | None = None
    phase: Phase = Phase.IMMEDIATE
    thread: bool = False
    durable: bool = False
    ordering: Ordering = "key"
    errors: ErrorPolicy | None = None

    def checked(self) -> ConnectOptions:
        """
        Return these options if their values are valid.

        :raises TypeError: if *priority* is not an integer or *phase* not a :class:`Phase`
        :raises ValueError: if *timeout* is not a positive number of seconds, *errors*
            not a policy or *ordering* neither ``"key"`` nor ``"receiver"``
        """
        check_priority(self.priority)
        if not isinstance(self.phase, Phase):  # pyright: ignore[reportUnnecessaryIsInstance] -- often from untyped config
            raise TypeError(f"connect(phase=...) must be a Phase, got {self.phase!r}")
        check_timeout(self.timeout, what="connect(timeout=...)")
        if self.ordering not in ("key", "receiver"):
            raise ValueError(f"ordering must be 'key' or 'receiver', not {self.ordering!r}")
        if self.errors is not None:
            check_errors(self.errors)
        return self


def connect_options(options: ConnectKwargs, *, where: str = "connect") -> ConnectOptions:
    """
    Return the :class:`ConnectOptions` of *options*, the keyword arguments of *where*.

    :raises TypeError: naming *where*, as Python does, for a keyword it does not take
    """
    for name in options:
        if name not in ConnectOptions.__dataclass_fields__:
            raise TypeError(f"{where}() got an unexpected keyword argument {name!r}")
    return ConnectOptions(**options)


@dataclass(frozen=True, slots=True)
class SendOptions:
    """How a send runs its receivers: the signal's defaults, or a send's overrides of them."""

    mode: Mode = Sequential()
    errors: ErrorPolicy = "raise"
    timeout: float | None = None

    def checked(self) -> SendOptions:
        """
        Return these options if their values are valid.

        :raises TypeError: if *mode* is not a mode instance, *timeout* not a number
        :raises ValueError: if *errors* is not a policy or *timeout* not positive
        """
        check_mode(self.mode)
        check_errors(self.errors)
        check_timeout(self.timeout)
        return self

    def overridden(
        self, mode: Mode | None, errors: ErrorPolicy | None, timeout: float | None
    ) -> SendOptions:
        """Return these options with the given ones (those not ``None``) in their place."""
        if mode is None and errors is None and timeout is None:
            return self
        return SendOptions(
            self.mode if mode is None else mode,
            self.errors if errors is None else errors,
            self.timeout if timeout is None else timeout,
        ).checked()
