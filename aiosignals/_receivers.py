from __future__ import annotations

import inspect
import itertools
import types
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

from ._phases import Phase

if TYPE_CHECKING:
    from ._event import Event
    from ._signal import Signal
    from ._types import ErrorPolicy, Ordering, P, R

__all__ = ["ANY", "EMPTY_PLAN", "Connection", "Plan", "ReceiverRecord", "receiver"]

_F = TypeVar("_F", bound=Callable[..., Any])


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


def receiver_key(fn: object) -> object:
    """Return what identifies *fn* as a receiver, for de-duplication and disconnect."""
    # A bound method object is created anew on each attribute access, so its id is not
    # stable: identify it by its instance and function instead.
    if isinstance(fn, types.MethodType):
        return (id(fn.__self__), id(fn.__func__))
    return id(fn)


def is_async_callable(fn: object) -> bool:
    """Return whether calling *fn* returns an awaitable we must await."""
    # inspect unwraps functools.partial and bound methods; callable objects need their
    # class's __call__ checked.
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(type(fn), "__call__", None)  # noqa: B004 -- we want the class attribute
    return call is not None and inspect.iscoroutinefunction(call)


def _takes_two_positionals(fn: types.FunctionType) -> bool:
    code = fn.__code__
    required = code.co_argcount - len(fn.__defaults__ or ())
    required_keywords = code.co_kwonlyargcount - len(fn.__kwdefaults__ or {})
    takes_two = code.co_argcount >= 2 or bool(code.co_flags & inspect.CO_VARARGS)
    return takes_two and required <= 2 and required_keywords == 0


def check_receiver(fn: object, payload_type: type[Event] | None = None) -> None:
    """
    Raise :class:`TypeError` unless *fn* can be called as ``fn(sender, payload)``.

    The message shows the ``(sender, payload)`` form and, for receivers written for
    Django's ``(sender, **kwargs)`` or ``(sender, instance, created, **kwargs)``, where
    their keyword arguments went: fields of the payload (``payload.instance``).
    """
    if not callable(fn):
        raise TypeError(f"a receiver must be callable, got {fn!r}")
    if isinstance(fn, types.FunctionType) and _takes_two_positionals(fn):
        # The common case, read off the code object: inspect.signature would also
        # materialise each function's __annotations__ dict (about 130 bytes a receiver).
        return
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # Builtins without a signature: trust them, as Django does.
    try:
        signature.bind(None, None)
    except TypeError as exc:
        raise TypeError(_shape_message(fn, signature, payload_type, exc)) from None


def _shape_message(
    fn: object, signature: inspect.Signature, payload_type: type[Event] | None, exc: TypeError
) -> str:
    name = getattr(fn, "__name__", None) or repr(fn)
    type_name = payload_type.__name__ if payload_type is not None else "Payload"
    fields = list(payload_type.model_fields) if payload_type is not None else []
    define = "async def" if is_async_callable(fn) else "def"
    lines = [
        f"receiver {fn!r} cannot be called as receiver(sender, payload): {exc}.",
        "Receivers take the sender and one payload model, positionally:",
        f"    {define} {name}(sender, payload: {type_name}) -> None: ...",
    ]
    params = list(signature.parameters.values())
    positional = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"
    ]
    django_style = [p.name for p in positional[1:] if p.default is p.empty]
    if any(p.kind is p.VAR_KEYWORD for p in params) or django_style:
        # Written for Django's send(sender=..., **kwargs): the keyword arguments are
        # fields of the payload here.
        named = [n for n in django_style if n in fields] or fields
        where = ", ".join(f"payload.{n}" for n in named) or "fields of the payload"
        lines.append(f"Django-style keyword arguments are fields of the payload here: {where}.")
    elif len(positional) == 1:
        lines.append(
            f"{name} takes one argument: the payload comes second, after the sender"
            + (f" (payload.{', payload.'.join(fields)})." if fields else ".")
        )
    return "\n".join(lines)


class ReceiverRecord:
    """
    One connection of a receiver to a signal.

    ``fn`` holds the receiver strongly; for a weakly held one it is ``None`` and ``ref``
    returns the receiver or ``None`` once it has been collected. ``plain`` marks the common
    case the send loop handles inline: a strongly held coroutine function with no timeout,
    phase, ``once`` or thread.
    """

    __slots__ = (
        "__weakref__",
        "dispatch_uid",
        "durable",
        "errors",
        "fired",
        "fn",
        "is_async",
        "key",
        "once",
        "ordering",
        "phase",
        "plain",
        "priority",
        "ref",
        "sender_id",
        "sender_ref",
        "seq",
        "thread",
        "timeout",
    )

    def __init__(
        self,
        fn: Callable[..., Any] | None,
        ref: Callable[[], Callable[..., Any] | None] | None,
        *,
        key: object,
        sender_id: int | None,
        sender_ref: object,
        dispatch_uid: str | None,
        priority: int,
        seq: int,
        once: bool,
        timeout: float | None,
        phase: Phase,
        thread: bool,
        durable: bool,
        is_async: bool,
        errors: ErrorPolicy | None = None,
        ordering: Ordering = "key",
    ) -> None:
        self.fn = fn
        self.ref = ref
        self.key = key
        self.sender_id = sender_id
        self.sender_ref = sender_ref
        self.dispatch_uid = dispatch_uid
        self.priority = priority
        self.seq = seq
        self.once = once
        self.fired = False
        self.timeout = timeout
        self.phase = phase
        self.thread = thread
        self.durable = durable
        self.is_async = is_async
        self.errors: ErrorPolicy | None = errors
        self.ordering: Ordering = ordering
        self.plain = (
            fn is not None
            and is_async
            and not once
            and timeout is None
            and phase is Phase.IMMEDIATE
            and not durable
            and errors is None
        )

    @property
    def sort_key(self) -> tuple[int, int]:
        """Higher priority first, then connection order."""
        return (-self.priority, self.seq)

    @property
    def sender(self) -> Any:
        """The sender this record is restricted to, :data:`ANY`, or ``None`` if it died."""
        if self.sender_id is None:
            return ANY
        ref = self.sender_ref
        if isinstance(ref, weakref.ref):
            return cast("weakref.ref[Any]", ref)()  # type: ignore[redundant-cast]
        return ref

    def resolve(self) -> Callable[..., Any] | None:
        """Return the receiver, or ``None`` if it was held weakly and has been collected."""
        if self.fn is not None:
            return self.fn
        assert self.ref is not None
        return self.ref()

    def hold(
        self,
        receiver: Callable[..., Any],
        sender: Any,
        *,
        weak: bool,
        on_death: Callable[[ReceiverRecord], None],
    ) -> None:
        """
        Hold *receiver* weakly if *weak*, and *sender* weakly when it can be.

        *on_death* gets this record when either is collected.

        :raises TypeError: if *receiver* cannot be held weakly
        """
        record_ref = weakref.ref(self)

        def prune(_: object) -> None:
            # Called by the garbage collector when the receiver or its sender dies.
            dead = record_ref()
            if dead is not None:
                on_death(dead)

        if weak:
            try:
                self.ref = (
                    weakref.WeakMethod(receiver, prune)
                    if isinstance(receiver, types.MethodType)
                    else weakref.ref(receiver, prune)
                )
            except TypeError:
                raise TypeError(
                    f"{receiver!r} cannot be held weakly; connect it with weak=False"
                ) from None
        if self.sender_id is not None:
            try:
                self.sender_ref = weakref.ref(sender, prune)
            except TypeError:
                self.sender_ref = sender  # Not weakly referenceable (an int, a str...).

    def view(self) -> Connection | None:
        """Return the public view of this connection, or ``None`` if its receiver died."""
        fn = self.resolve()
        if fn is None:
            return None
        return Connection(
            receiver=fn,
            sender=self.sender,
            dispatch_uid=self.dispatch_uid,
            priority=self.priority,
            phase=self.phase,
            once=self.once,
            timeout=self.timeout,
            thread=self.thread,
            durable=self.durable,
            weak=self.fn is None,
            errors=self.errors,
            ordering=self.ordering,
        )

    def __repr__(self) -> str:
        return (
            f"<receiver {self.resolve()!r} sender={self.sender!r} priority={self.priority}"
            f" phase={self.phase.name}>"
        )


class Plan:
    """The ordered receivers one send walks; built once per sender and cached."""

    __slots__ = ("_fn_stages", "_stages", "fns", "nones", "plain", "records", "single")

    def __init__(self, records: tuple[ReceiverRecord, ...]) -> None:
        self.records = records
        # Every record is a strongly held coroutine function with no options: the send
        # loop can call them without per-receiver checks.
        self.plain = all(record.plain for record in records)
        self.fns: tuple[Callable[..., Any], ...] | None = (
            tuple(record.fn for record in records if record.fn is not None) if self.plain else None
        )
        # The results of a send whose receivers all return None (most do), ready to copy.
        self.nones: list[tuple[Callable[..., Any], None]] = [(fn, None) for fn in self.fns or ()]
        self._stages: tuple[tuple[ReceiverRecord, ...], ...] | None = None
        # Whether no two receivers share a priority: a concurrent send then starts no task.
        self.single = len({record.priority for record in records}) == len(records)
        self._fn_stages: tuple[tuple[Callable[..., Any], ...], ...] | None = None

    @property
    def fn_stages(self) -> tuple[tuple[Callable[..., Any], ...], ...]:
        """The receivers of a plain plan grouped by priority, for the concurrent fast path."""
        if self._fn_stages is None:
            self._fn_stages = tuple(
                tuple(r.fn for r in stage if r.fn is not None) for stage in self.stages
            )
        return self._fn_stages

    @property
    def stages(self) -> tuple[tuple[ReceiverRecord, ...], ...]:
        """The records grouped by priority, highest first: the stages of a concurrent send."""
        if self._stages is None:
            self._stages = tuple(
                tuple(group)
                for _, group in itertools.groupby(self.records, key=lambda r: r.priority)
            )
        return self._stages


EMPTY_PLAN = Plan(())
"""The plan of a send that reaches no receiver."""


@dataclass(frozen=True, slots=True)
class Connection:
    """
    One connection of a receiver to a signal, as :attr:`Signal.connections` lists them.

    A snapshot: connecting or disconnecting later does not change it.

    .. versionadded:: 0.1
    """

    receiver: Callable[..., Any]
    """The receiver (alive: a collected weakly held one is not listed)."""
    sender: Any
    """The sender it is restricted to, or :data:`ANY`."""
    dispatch_uid: str | None
    """Its ``dispatch_uid``, or ``None``."""
    priority: int
    """Higher runs first."""
    phase: Phase
    """When it runs relative to the enclosing transaction."""
    once: bool
    """Whether it is disconnected after its first delivery."""
    timeout: float | None
    """Its own timeout in seconds, or ``None``."""
    thread: bool
    """Whether it runs in a worker thread."""
    durable: bool
    """Whether it is delivered through the outbox."""
    weak: bool
    """Whether the signal holds it weakly."""
    errors: ErrorPolicy | None
    """Its own error policy, or ``None`` for the send's."""
    ordering: Ordering = "key"
    """
    The order its outbox rows keep, if it is durable: per ordering key, or per receiver.

    .. versionadded:: 0.2
    """


def receiver(
    signal: Signal[P] | Sequence[Signal[Any]],
    *,
    sender: Any = ANY,
    weak: bool | None = None,
    dispatch_uid: str | None = None,
    priority: int = 0,
    once: bool = False,
    timeout: float | None = None,
    phase: Phase = Phase.IMMEDIATE,
    thread: bool = False,
    durable: bool = False,
    ordering: Ordering = "key",
    errors: ErrorPolicy | None = None,
) -> Callable[[Callable[[Any, P], R]], Callable[[Any, P], R]]:
    """
    Connect the decorated function to *signal*, or to each signal of a list.

    Reads like Django's ``@receiver``; the keyword arguments are those of
    :meth:`Signal.connect <aiosignals.Signal.connect>`.

    :param signal: a signal, or a list or tuple of signals
    :return: a decorator that connects the function and returns it unchanged

    .. versionadded:: 0.1
    """
    from ._signal import Signal

    signals: Sequence[Signal[Any]] = [signal] if isinstance(signal, Signal) else list(signal)

    def decorator(fn: Callable[[Any, P], R]) -> Callable[[Any, P], R]:
        for each in signals:
            each.connect(
                fn,
                sender=sender,
                weak=weak,
                dispatch_uid=dispatch_uid,
                priority=priority,
                once=once,
                timeout=timeout,
                phase=phase,
                thread=thread,
                durable=durable,
                ordering=ordering,
                errors=errors,
            )
        return fn

    return decorator
