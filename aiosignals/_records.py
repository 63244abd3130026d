"""
One connection of a receiver to a signal: its record and its public view.

Also the checks and the identity every connection goes through: the receiver's shape,
its key.
"""

from __future__ import annotations

import inspect
import types
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from ._options import ANY, ConnectOptions, Phase

if TYPE_CHECKING:
    from ._event import Event
    from ._types import ErrorPolicy, Ordering

__all__ = [
    "Connection",
    "ReceiverRecord",
    "check_receiver",
    "is_async_callable",
    "receiver_key",
]


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
    phase, ``once``, thread or error policy of its own. ``detach`` removes the record from
    its signal (a spent ``once`` receiver, a collected receiver or sender).
    """

    __slots__ = (
        "__weakref__",
        "detach",
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
        fn: Callable[..., Any],
        options: ConnectOptions,
        *,
        seq: int,
        detach: Callable[[ReceiverRecord], None] | None = None,
    ) -> None:
        sender = options.sender
        weak = isinstance(fn, types.MethodType) if options.weak is None else options.weak
        self.fn: Callable[..., Any] | None = None if weak else fn
        self.ref: Callable[[], Callable[..., Any] | None] | None = None
        self.key = receiver_key(fn)
        self.sender_id = None if sender is ANY else id(sender)
        self.sender_ref: object = sender
        self.dispatch_uid = options.dispatch_uid
        self.priority = options.priority
        self.seq = seq
        self.once = options.once
        self.fired = False
        self.timeout = options.timeout
        self.phase = options.phase
        self.thread = options.thread
        self.durable = options.durable
        self.ordering: Ordering = options.ordering
        self.is_async = is_async_callable(fn)
        self.errors: ErrorPolicy | None = options.errors
        self.detach = detach
        self.plain = (
            not weak
            and self.is_async
            and not self.once
            and self.timeout is None
            and self.phase is Phase.IMMEDIATE
            and not self.durable
            and self.errors is None
        )
        if detach is not None and (weak or self.sender_id is not None):
            # A connection; a task-scoped one (no detach) holds both strongly for its block.
            self._hold(fn, sender, weak=weak)

    def spend(self) -> bool:
        """
        Mark a ``once`` receiver as delivered and detach it; return whether it still was due.

        Marked before any await: a concurrent send sees it and skips the receiver.
        """
        if not self.once:
            return True
        if self.fired:
            return False
        self.fired = True
        if self.detach is not None:
            self.detach(self)
        return True

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

    def _hold(self, receiver: Callable[..., Any], sender: Any, *, weak: bool) -> None:
        """
        Hold *receiver* weakly if *weak*, and a sender weakly when it can be.

        The record detaches itself when either is collected.

        :raises TypeError: if *receiver* cannot be held weakly
        """
        record_ref = weakref.ref(self)

        def prune(_: object) -> None:
            # Called by the garbage collector when the receiver or its sender dies.
            dead = record_ref()
            if dead is not None and dead.detach is not None:
                dead.detach(dead)

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
