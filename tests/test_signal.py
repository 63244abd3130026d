from __future__ import annotations

import functools
import gc
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from pydantic import ConfigDict, ValidationError

from aiosignals import ANY, Concurrent, Event, Sequential, Signal, receiver

pytestmark = pytest.mark.anyio


class Registered(Event):
    user_id: int
    email: str = "a@b.c"


class Other(Event):
    name: str


class Service:
    pass


def make_signal(**kwargs: Any) -> Signal[Registered]:
    return Signal(Registered, **kwargs)


async def test_send_delivers_payload_and_returns_results() -> None:
    """A send calls each receiver with (sender, payload) and returns (receiver, result)."""
    signal = make_signal()
    seen: list[tuple[object, Registered]] = []

    async def first(sender: object, payload: Registered) -> int:
        seen.append((sender, payload))
        return payload.user_id

    signal.connect(first)
    results = await signal.send(Service, Registered(user_id=7))
    assert results == [(first, 7)]
    assert seen == [(Service, Registered(user_id=7))]


@pytest.mark.parametrize(
    "pattern",
    [(None, None, None), (1, None, None), (None, 2, None), (None, None, 3), (1, None, 3)],
)
async def test_results_keep_order_whatever_mix_of_none_and_values(
    pattern: tuple[int | None, ...],
) -> None:
    """A default send's results pair each receiver with its own result, None or not."""
    signal = make_signal()
    receivers = []
    for value in pattern:

        async def give(
            sender: object, payload: Registered, value: int | None = value
        ) -> int | None:
            return value

        signal.connect(give)
        receivers.append(give)
    first = await signal.send(Service, Registered(user_id=1))
    assert first == list(zip(receivers, pattern, strict=True))
    first.clear()  # the caller owns the list: the next send is not affected
    assert await signal.send(Service, Registered(user_id=1)) == list(
        zip(receivers, pattern, strict=True)
    )


async def test_one_receiver_for_any_and_for_a_sender_gets_a_result_per_call() -> None:
    """The same function connected twice (ANY and a sender) runs twice, each result kept."""
    signal = make_signal()
    calls = iter([None, "second"])

    async def counted(sender: object, payload: Registered) -> str | None:
        return next(calls)

    signal.connect(counted)
    signal.connect(counted, sender=Service)
    assert await signal.send(Service, Registered(user_id=1)) == [
        (counted, None),
        (counted, "second"),
    ]


async def test_an_unknown_field_is_an_error_not_dropped() -> None:
    """A misspelt field fails validation instead of vanishing into a default."""
    signal = make_signal()
    with pytest.raises(ValidationError, match="emial"):
        await signal.send(Service, user_id=1, emial="typo@b.c")


async def test_send_validates_fields() -> None:
    """Fields passed to send are validated into the payload type."""
    signal = make_signal()
    got: list[Registered] = []

    async def keep(sender: object, payload: Registered) -> None:
        got.append(payload)

    signal.connect(keep)
    await signal.send(Service, user_id="3", email="x@y.z")
    assert got == [Registered(user_id=3, email="x@y.z")]


async def test_invalid_fields_raise_before_any_receiver() -> None:
    """Fields that fail validation raise ValidationError and no receiver runs."""
    signal = make_signal()
    calls: list[object] = []

    async def keep(sender: object, payload: Registered) -> None:
        calls.append(payload)

    signal.connect(keep)
    with pytest.raises(ValidationError):
        await signal.send(Service, user_id="not a number")
    assert calls == []


async def test_payload_of_wrong_type_raises_validation_error() -> None:
    """A payload of another signal's type raises ValidationError before any receiver runs."""
    signal = make_signal()
    calls: list[object] = []

    async def keep(sender: object, payload: Registered) -> None:
        calls.append(payload)

    signal.connect(keep)
    with pytest.raises(ValidationError):
        await signal.send(Service, Other(name="x"))  # type: ignore[arg-type]
    assert calls == []


async def test_payload_and_fields_together_is_an_error() -> None:
    """Passing a payload and fields at once is a TypeError, not a silent merge."""
    signal = make_signal()
    with pytest.raises(TypeError, match="not both"):
        await signal.send(Service, Registered(user_id=1), email="x@y.z")


async def test_payload_subclass_is_delivered_as_the_payload_type() -> None:
    """An instance of a payload subclass reaches receivers as the signal's payload type."""

    class Special(Registered):
        vip: bool = True

    signal = make_signal()
    got: list[Registered] = []

    async def keep(sender: object, payload: Registered) -> None:
        got.append(payload)

    signal.connect(keep)
    await signal.send(Service, Special(user_id=1, email="v@i.p"))
    assert type(got[0]) is Registered
    assert got[0] == Registered(user_id=1, email="v@i.p")


async def test_payload_subclass_keeps_the_values_of_its_fields() -> None:
    """A payload subclass hands its field values over as they are, an entity's identity too."""

    class Entity:
        pass

    class Saved(Event):
        model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)
        instance: Entity

    class Audited(Saved):
        who: str

    signal = Signal(Saved)
    got: list[Saved] = []

    async def keep(sender: object, payload: Saved) -> None:
        got.append(payload)

    signal.connect(keep)
    entity = Entity()
    await signal.send(Service, Audited(instance=entity, who="admin"))
    assert type(got[0]) is Saved
    assert got[0].instance is entity


async def test_payload_is_frozen() -> None:
    """A receiver cannot change the payload the next receiver sees."""
    signal = make_signal()

    async def mutate(sender: object, payload: Registered) -> None:
        payload.user_id = 99  # type: ignore[misc]

    signal.connect(mutate)
    with pytest.raises(ValidationError):
        await signal.send(Service, user_id=1)


def test_payload_type_must_be_an_event() -> None:
    """Signal() rejects a payload type that is not an Event subclass."""
    with pytest.raises(TypeError, match="Event subclass"):
        Signal(dict)  # type: ignore[type-var]


def test_bad_options_are_rejected() -> None:
    """An unknown error policy, a max_depth below 1 and a zero limit are clear errors."""
    with pytest.raises(ValueError, match="errors"):
        Signal(Registered, errors="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_depth"):
        Signal(Registered, max_depth=0)
    with pytest.raises(ValueError, match="limit"):
        Concurrent(limit=0)


@pytest.mark.parametrize("timeout", [0, -1, float("nan")])
def test_a_timeout_that_fails_every_receiver_is_refused_at_construction(timeout: float) -> None:
    """Signal(timeout=0, -1 or nan) is a ValueError, not a failure at every send."""
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        Signal(Registered, timeout=timeout)
    signal = make_signal()
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        signal.timeout = timeout


@pytest.mark.parametrize("timeout", [0, -1, float("nan")])
def test_connect_refuses_a_timeout_that_is_not_positive(timeout: float) -> None:
    """connect(timeout=nan) is refused like 0 and -1, naming connect's option."""

    async def handler(sender: object, payload: Registered) -> None:
        pass

    signal = make_signal()
    with pytest.raises(ValueError, match=r"connect\(timeout=...\)"):
        signal.connect(handler, timeout=timeout)
    assert signal.connections == ()


@pytest.mark.parametrize(
    ("mode", "hint"),
    [
        (Concurrent, r"Concurrent\(\)"),
        (Sequential, r"Sequential\(\)"),
        ("concurrent", "Concurrent"),
    ],
)
def test_a_mode_that_is_not_a_mode_instance_is_refused_at_construction(
    mode: object, hint: str
) -> None:
    """Signal(mode=Concurrent) (the class) or a string is a TypeError showing the instance."""
    with pytest.raises(TypeError, match=hint):
        Signal(Registered, mode=mode)  # type: ignore[arg-type]
    signal = make_signal()
    with pytest.raises(TypeError, match=hint):
        signal.mode = mode  # type: ignore[assignment]


@pytest.mark.parametrize("limit", [0, -1])
def test_concurrent_limit_below_one_is_refused(limit: int) -> None:
    """Concurrent(limit=0 or -1) is a ValueError."""
    with pytest.raises(ValueError, match="at least 1"):
        Concurrent(limit=limit)


def test_max_depth_below_one_and_a_bogus_policy_are_refused() -> None:
    """max_depth=0 or -1, and errors="bogus" on the signal or per receiver, are ValueErrors."""
    for depth in (0, -1):
        with pytest.raises(ValueError, match="max_depth"):
            Signal(Registered, max_depth=depth)
    with pytest.raises(ValueError, match="errors must be one of"):
        Signal(Registered, errors="bogus")  # type: ignore[arg-type]

    async def handler(sender: object, payload: Registered) -> None:
        pass

    with pytest.raises(ValueError, match="errors must be one of"):
        make_signal().connect(handler, errors="bogus")  # type: ignore[call-overload]


async def test_bad_send_options_are_refused_before_any_receiver_runs() -> None:
    """send(mode=Concurrent) or send(timeout=nan) fails before any receiver is called."""
    signal = make_signal()
    calls: list[int] = []

    async def handler(sender: object, payload: Registered) -> None:
        calls.append(payload.user_id)

    signal.connect(handler)
    with pytest.raises(TypeError, match=r"Concurrent\(\)"):
        await signal.send(Service, user_id=1, mode=Concurrent)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        await signal.send(Service, user_id=1, timeout=float("nan"))
    assert calls == []


async def test_no_receivers_returns_empty_list() -> None:
    """A send with no receivers returns an empty list."""
    assert await make_signal().send(Service, user_id=1) == []


# -- connect -------------------------------------------------------------------------------


def test_connect_rejects_non_callable() -> None:
    """Connecting something that is not callable is a TypeError at connect time."""
    with pytest.raises(TypeError, match="callable"):
        make_signal().connect(42)  # type: ignore[call-overload]


def test_connect_rejects_wrong_arity() -> None:
    """A callable that cannot take (sender, payload) is a TypeError at connect time."""

    async def one_arg(sender: object) -> None:
        pass

    def three_args(sender: object, payload: object, extra: object) -> None:
        pass

    signal = make_signal()
    with pytest.raises(TypeError, match=r"receiver\(sender, payload\)"):
        signal.connect(one_arg)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"receiver\(sender, payload\)"):
        signal.connect(three_args)  # type: ignore[arg-type]
    assert not signal.has_receivers_for(Service)


def test_connect_accepts_kwargs_receivers() -> None:
    """A receiver taking *args or defaults beyond (sender, payload) is accepted."""

    def flexible(sender: object, payload: object, *rest: object, extra: int = 1) -> None:
        pass

    signal = make_signal()
    signal.connect(flexible)
    assert signal.receivers_for(Service) == [flexible]


def test_a_receiver_taking_only_the_payload_is_shown_the_two_argument_form() -> None:
    """A receiver of shape (payload) gets a TypeError showing (sender, payload)."""

    async def on_registered(payload: Registered) -> None:
        pass

    with pytest.raises(TypeError) as info:
        make_signal().connect(on_registered)  # type: ignore[arg-type]
    message = str(info.value)
    assert "async def on_registered(sender, payload: Registered)" in message
    assert "payload comes second" in message


def test_a_django_kwargs_receiver_is_told_where_its_keyword_arguments_went() -> None:
    """(sender, **kwargs) gets a TypeError naming the payload fields that replace kwargs."""

    def on_registered(sender: object, **kwargs: object) -> None:
        pass

    with pytest.raises(TypeError) as info:
        make_signal().connect(on_registered)  # type: ignore[arg-type]
    message = str(info.value)
    assert "(sender, payload: Registered)" in message
    assert "payload.user_id, payload.email" in message


def test_a_django_post_save_receiver_is_told_instance_and_created_are_payload_fields() -> None:
    """Django's (sender, instance, created, **kwargs) is shown payload.instance and .created."""
    from aiosignals.models import post_save

    def create_profile(sender: object, instance: object, created: bool, **kwargs: object) -> None:
        pass

    with pytest.raises(TypeError) as info:
        post_save.connect(create_profile)  # type: ignore[arg-type]
    message = str(info.value)
    assert "    def create_profile(sender, payload: PostSave) -> None" in message
    assert "payload.instance, payload.created" in message


async def test_django_style_send_with_sender_keyword_says_the_sender_is_positional() -> None:
    """send(sender=X, ...) is a TypeError saying the sender is the first positional argument."""
    signal = make_signal()
    with pytest.raises(TypeError, match=r"first positional argument: send\(Sender, user_id=...\)"):
        await signal.send(sender=Service, user_id=1)


async def test_connect_returns_receiver_and_works_as_decorator() -> None:
    """connect returns the receiver, so @signal.connect and @signal.connect(...) work."""
    signal = make_signal()

    @signal.connect
    async def plain(sender: object, payload: Registered) -> str:
        return "plain"

    @signal.connect(priority=5)
    async def early(sender: object, payload: Registered) -> str:
        return "early"

    assert plain.__name__ == "plain"
    results = await signal.send(Service, user_id=1)
    assert [result for _, result in results] == ["early", "plain"]


async def test_receiver_decorator_connects_to_one_or_many_signals() -> None:
    """@receiver connects to a single signal or to each signal of a list."""
    first, second = make_signal(), make_signal()
    calls: list[str] = []

    @receiver([first, second], sender=Service, dispatch_uid="both")
    async def both(sender: object, payload: Registered) -> None:
        calls.append("both")

    @receiver(first)
    async def only_first(sender: object, payload: Registered) -> None:
        calls.append("first")

    await first.send(Service, user_id=1)
    await second.send(Service, user_id=1)
    await second.send(object(), user_id=1)
    assert calls == ["both", "first", "both"]


async def test_duplicate_connect_is_a_no_op() -> None:
    """The same receiver for the same sender, or the same dispatch_uid, connects once."""
    signal = make_signal()
    calls: list[str] = []

    async def handler(sender: object, payload: Registered) -> None:
        calls.append("handler")

    async def other(sender: object, payload: Registered) -> None:
        calls.append("other")

    signal.connect(handler)
    signal.connect(handler)
    signal.connect(handler, sender=Service)  # another sender: a second connection
    signal.connect(other, dispatch_uid="uid")
    signal.connect(handler, dispatch_uid="uid")
    await signal.send(Service, user_id=1)
    assert calls == ["handler", "handler", "other"]


async def test_disconnect_by_receiver_sender_and_uid() -> None:
    """disconnect removes by receiver and sender or by dispatch_uid and says whether it did."""
    signal = make_signal()

    async def handler(sender: object, payload: Registered) -> None:
        pass

    async def other(sender: object, payload: Registered) -> None:
        pass

    signal.connect(handler, sender=Service)
    signal.connect(other, dispatch_uid="other")
    assert not signal.disconnect(handler)  # connected for Service, not ANY
    assert signal.disconnect(handler, sender=Service)
    assert not signal.disconnect(handler, sender=Service)
    assert signal.disconnect(dispatch_uid="other")
    assert not signal.has_receivers_for(Service)
    with pytest.raises(TypeError):
        signal.disconnect()


async def test_one_uid_for_two_senders_is_two_connections() -> None:
    """connect(r, sender=A, dispatch_uid=u) then the same for B delivers to both senders."""
    signal = make_signal()
    calls: list[object] = []

    class A:
        pass

    class B:
        pass

    async def audit(sender: object, payload: Registered) -> None:
        calls.append(sender)

    signal.connect(audit, sender=A, dispatch_uid="audit")
    signal.connect(audit, sender=B, dispatch_uid="audit")
    await signal.send(A, user_id=1)
    await signal.send(B, user_id=1)
    assert calls == [A, B]
    assert signal.disconnect(dispatch_uid="audit", sender=A)
    await signal.send(B, user_id=1)
    assert calls == [A, B, B]


async def test_a_receiver_with_and_without_a_uid_is_two_connections() -> None:
    """connect(r) then connect(r, dispatch_uid=u) are two connections; u is then taken."""
    signal = make_signal()
    calls: list[str] = []

    async def handler(sender: object, payload: Registered) -> None:
        calls.append("handler")

    async def other(sender: object, payload: Registered) -> None:
        calls.append("other")

    signal.connect(handler)
    signal.connect(handler, dispatch_uid="u")
    signal.connect(other, dispatch_uid="u")  # the key (u, ANY) is connected: a no-op
    await signal.send(Service, user_id=1)
    assert calls == ["handler", "handler"]
    assert [c.dispatch_uid for c in signal.connections] == [None, "u"]


def test_a_different_receiver_under_a_durable_uid_is_an_error() -> None:
    """A durable uid names one receiver: connecting another under it is a ValueError."""
    signal = Signal(Registered, name="test_signal.durable_uid")

    class A:
        pass

    async def mail(sender: object, payload: Registered) -> None:
        pass

    async def impostor(sender: object, payload: Registered) -> None:
        pass

    signal.connect(mail, dispatch_uid="mail", durable=True)
    with pytest.raises(ValueError, match="names the durable receiver"):
        signal.connect(impostor, sender=A, dispatch_uid="mail")
    with pytest.raises(ValueError, match="names the durable receiver"):
        signal.connect(impostor, sender=A, dispatch_uid="mail", durable=True)
    signal.connect(mail, sender=A, dispatch_uid="mail", durable=True)  # the same receiver
    assert [c.receiver for c in signal.connections] == [mail, mail]


def test_a_durable_receiver_under_a_plain_receivers_uid_is_named_as_such() -> None:
    """Refusing a durable receiver under a plain one's uid calls only the new one durable."""
    signal = Signal(Registered, name="test_signal.durable_under_plain_uid")

    async def plain(sender: object, payload: Registered) -> None:
        pass

    async def mail(sender: object, payload: Registered) -> None:
        pass

    signal.connect(plain, dispatch_uid="mail")
    with pytest.raises(
        ValueError, match=r"names the receiver .*plain.*; the durable receiver .*mail"
    ) as info:
        signal.connect(mail, sender=int, dispatch_uid="mail", durable=True)
    assert "the durable receiver <function" not in str(info.value).split(";")[0]


async def test_disconnect_all_senders_removes_the_receiver_everywhere() -> None:
    """disconnect(r, all_senders=True) removes r for ANY and every sender; the default only ANY."""
    signal = make_signal()
    calls: list[str] = []

    class A:
        pass

    async def handler(sender: object, payload: Registered) -> None:
        calls.append("handler")

    async def keeper(sender: object, payload: Registered) -> None:
        calls.append("keeper")

    signal.connect(handler)
    signal.connect(handler, sender=A)
    signal.connect(handler, sender=Service, dispatch_uid="h")
    signal.connect(keeper, sender=A)
    assert signal.disconnect(handler)  # Django: the ANY connection only
    await signal.send(A, user_id=1)
    assert calls == ["handler", "keeper"]
    assert signal.disconnect(handler, all_senders=True)
    assert not signal.disconnect(handler, all_senders=True)
    assert [c.receiver for c in signal.connections] == [keeper]


async def test_disconnect_all_senders_by_uid() -> None:
    """disconnect(dispatch_uid=u, all_senders=True) removes every connection made under u."""
    signal = make_signal()

    class A:
        pass

    async def handler(sender: object, payload: Registered) -> None:
        pass

    signal.connect(handler, sender=A, dispatch_uid="u")
    signal.connect(handler, sender=Service, dispatch_uid="u")
    assert signal.disconnect(dispatch_uid="u", all_senders=True)
    assert signal.connections == ()


def test_connections_lists_every_connection_with_its_options() -> None:
    """signal.connections shows each receiver, sender, uid, priority, phase and options."""
    from aiosignals import Connection, Phase

    signal = make_signal()

    async def first(sender: object, payload: Registered) -> None:
        pass

    def threaded(sender: object, payload: Registered) -> None:
        pass

    signal.connect(threaded, sender=Service, thread=True, timeout=2.5, errors="log")
    signal.connect(first, priority=5, dispatch_uid="first", once=True, phase=Phase.AFTER_COMMIT)
    assert signal.connections == (
        Connection(
            receiver=first,
            sender=ANY,
            dispatch_uid="first",
            priority=5,
            phase=Phase.AFTER_COMMIT,
            once=True,
            timeout=None,
            thread=False,
            durable=False,
            weak=False,
            errors=None,
        ),
        Connection(
            receiver=threaded,
            sender=Service,
            dispatch_uid=None,
            priority=0,
            phase=Phase.IMMEDIATE,
            once=False,
            timeout=2.5,
            thread=True,
            durable=False,
            weak=False,
            errors="log",
        ),
    )
    with pytest.raises(AttributeError):
        signal.connections = ()  # type: ignore[misc]


async def test_sender_matching_is_by_identity() -> None:
    """A receiver connected for a sender gets only that object's sends; ANY gets all."""
    signal = make_signal()
    got: list[str] = []

    class A:
        pass

    class B:
        pass

    async def for_a(sender: object, payload: Registered) -> None:
        got.append("a")

    async def for_all(sender: object, payload: Registered) -> None:
        got.append("all")

    signal.connect(for_a, sender=A)
    signal.connect(for_all, sender=ANY)
    await signal.send(A, user_id=1)
    await signal.send(B, user_id=1)
    await signal.send(None, user_id=1)
    assert got == ["a", "all", "all", "all"]
    assert signal.receivers_for(A) == [for_a, for_all]
    assert signal.receivers_for(B) == [for_all]


async def test_equal_but_distinct_senders_do_not_match() -> None:
    """Sender matching uses identity, not equality."""
    signal = make_signal()
    got: list[object] = []
    key = ("tenant", 1)

    async def handler(sender: object, payload: Registered) -> None:
        got.append(sender)

    signal.connect(handler, sender=key)
    await signal.send(("tenant", int("1")), user_id=1)
    await signal.send(key, user_id=1)
    assert got == [key]


# -- references ----------------------------------------------------------------------------


class Handler:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def on_registered(self, sender: object, payload: Registered) -> None:
        self.log.append("method")

    async def __call__(self, sender: object, payload: Registered) -> None:
        self.log.append("call")


async def test_default_holds_bound_methods_weakly() -> None:
    """By default a bound method does not keep its instance alive and goes with it."""
    signal = make_signal()
    log: list[str] = []
    handler = Handler(log)
    signal.connect(handler.on_registered)
    await signal.send(Service, user_id=1)
    del handler
    gc.collect()
    assert await signal.send(Service, user_id=1) == []
    assert log == ["method"]
    assert not signal.has_receivers_for(Service)
    assert signal.connections == ()


async def test_default_holds_closures_strongly() -> None:
    """By default a closure connected inside a function does not silently vanish."""
    signal = make_signal()
    log: list[int] = []

    def install() -> None:
        async def closure(sender: object, payload: Registered) -> None:
            log.append(payload.user_id)

        signal.connect(closure)
        signal.connect(lambda sender, payload: log.append(-payload.user_id))
        signal.connect(Handler([]))  # a callable object, strongly held too

    install()
    gc.collect()
    await signal.send(Service, user_id=4)
    assert log == [4, -4]
    assert len(signal.receivers_for(Service)) == 3


async def test_weak_true_holds_everything_weakly() -> None:
    """With weak=True any receiver goes once nothing else references it, as in Django."""
    signal = make_signal()
    log: list[str] = []

    def install() -> Handler:
        async def closure(sender: object, payload: Registered) -> None:
            log.append("closure")

        signal.connect(closure, weak=True)
        kept = Handler(log)
        signal.connect(kept, weak=True)
        signal.connect(Handler(log), weak=True)  # nothing keeps this one
        return kept

    kept = install()
    gc.collect()
    await signal.send(Service, user_id=1)
    assert log == ["call"]
    del kept
    gc.collect()
    assert signal.receivers_for(Service) == []


async def test_weak_false_keeps_bound_method_instance_alive() -> None:
    """With weak=False a bound method keeps its instance alive until disconnected."""
    signal = make_signal()
    log: list[str] = []
    handler = Handler(log)
    method = handler.on_registered
    signal.connect(method, weak=False)
    del handler, method
    gc.collect()
    await signal.send(Service, user_id=1)
    assert log == ["method"]


def test_weak_true_rejects_unreferenceable_receiver() -> None:
    """A receiver that cannot be weakly referenced with weak=True is a clear TypeError."""

    class Slotted:
        __slots__ = ()  # no __weakref__ slot: cannot be weakly referenced

        async def __call__(self, sender: object, payload: Registered) -> None:
            pass

    signal = make_signal()
    with pytest.raises(TypeError, match="weak=False"):
        signal.connect(Slotted(), weak=True)
    signal.connect(Slotted())
    assert len(signal.receivers_for(Service)) == 1


async def test_partial_and_callable_object_receivers() -> None:
    """functools.partial of a coroutine function and async callable objects are awaited."""
    signal = make_signal()
    log: list[str] = []

    async def tagged(tag: str, sender: object, payload: Registered) -> str:
        log.append(tag)
        return tag

    signal.connect(functools.partial(tagged, "partial"))
    signal.connect(Handler(log))
    results = await signal.send(Service, user_id=1)
    assert [result for _, result in results] == ["partial", None]
    assert log == ["partial", "call"]


async def test_dead_sender_prunes_its_receivers() -> None:
    """Receivers connected for a sender that is garbage collected are pruned."""
    signal = make_signal()

    class Temp:
        pass

    sender = Temp()

    async def handler(sender: object, payload: Registered) -> None:
        pass

    signal.connect(handler, sender=sender)
    assert signal.has_receivers_for(sender)
    del sender
    gc.collect()
    assert signal.connections == ()


# -- order -----------------------------------------------------------------------------------


def _recorder(log: list[str], name: str, *, pause: bool = False) -> Any:
    async def record(sender: object, payload: Registered) -> str:
        log.append(f"start {name}")
        if pause:
            # Yields to the scheduler: the other receivers of a concurrent stage start.
            await anyio.lowlevel.checkpoint()
        log.append(f"end {name}")
        return name

    return record


@pytest.mark.parametrize("mode", [Sequential(), Concurrent(), Concurrent(limit=2)])
async def test_priority_then_connection_order(mode: Sequential | Concurrent) -> None:
    """Higher priority first, then connection order; results in that order in every mode."""
    signal = make_signal(mode=mode)
    log: list[str] = []
    for name, priority in [("a", 0), ("b", 5), ("c", 0), ("d", 10), ("e", 5)]:
        signal.connect(_recorder(log, name), priority=priority)
    results = await signal.send(Service, user_id=1)
    assert [result for _, result in results] == ["d", "b", "e", "a", "c"]


async def test_concurrent_priorities_are_stages() -> None:
    """In Concurrent mode a lower priority starts only when the higher one has finished."""
    signal = make_signal(mode=Concurrent())
    log: list[str] = []
    signal.connect(_recorder(log, "audit1", pause=True), priority=10)
    signal.connect(_recorder(log, "audit2", pause=True), priority=10)
    signal.connect(_recorder(log, "rest1"))
    signal.connect(_recorder(log, "rest2"))
    results = await signal.send(Service, user_id=1)
    assert set(log[:2]) == {"start audit1", "start audit2"}  # ran together
    assert log.index("end audit1") < log.index("start rest1")
    assert log.index("end audit2") < log.index("start rest2")
    assert [result for _, result in results] == ["audit1", "audit2", "rest1", "rest2"]


async def test_concurrent_receivers_overlap() -> None:
    """Concurrent receivers of one priority run at the same time; Sequential ones do not."""
    for mode, overlapping in [(Concurrent(), True), (Sequential(), False)]:
        signal = make_signal(mode=mode)
        log: list[str] = []
        for name in "abc":
            signal.connect(_recorder(log, name, pause=True))
        await signal.send(Service, user_id=1)
        assert (log[:3] == ["start a", "start b", "start c"]) is overlapping


async def test_concurrent_limit_caps_running_receivers() -> None:
    """Concurrent(limit=N) runs at most N receivers at once, and all of them."""
    running = peak = 0
    signal = make_signal(mode=Concurrent(limit=3))

    def make(index: int) -> Any:
        async def worker(sender: object, payload: Registered) -> int:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await anyio.lowlevel.checkpoint()
            running -= 1
            return index

        return worker

    for index in range(10):
        signal.connect(make(index))
    results = await signal.send(Service, user_id=1)
    assert peak == 3
    assert [result for _, result in results] == list(range(10))


async def test_send_mode_overrides_signal_mode() -> None:
    """send(mode=...) overrides the signal's default mode for that send only."""
    signal = make_signal()
    log: list[str] = []
    for name in "ab":
        signal.connect(_recorder(log, name, pause=True))
    await signal.send(Service, user_id=1, mode=Concurrent())
    assert log[:2] == ["start a", "start b"]
    log.clear()
    await signal.send(Service, user_id=1)
    assert log[:2] == ["start a", "end a"]


# -- sync receivers ------------------------------------------------------------------------


async def test_sync_receiver_called_inline() -> None:
    """A plain function is called inline, in the event loop thread."""
    import threading

    signal = make_signal()
    threads: list[int] = []

    def sync(sender: object, payload: Registered) -> int:
        threads.append(threading.get_ident())
        return payload.user_id * 2

    signal.connect(sync)
    assert await signal.send(Service, user_id=2) == [(sync, 4)]
    assert threads == [threading.get_ident()]


async def test_sync_receiver_in_thread() -> None:
    """thread=True runs a plain function in a worker thread and returns its result."""
    import threading

    signal = make_signal()
    threads: list[int] = []

    def blocking(sender: object, payload: Registered) -> int:
        threads.append(threading.get_ident())
        return payload.user_id + 1

    signal.connect(blocking, thread=True)
    assert await signal.send(Service, user_id=2) == [(blocking, 3)]
    assert threads
    assert threads[0] != threading.get_ident()


def test_thread_option_rejects_async_receivers() -> None:
    """thread=True with a coroutine function is a TypeError."""

    async def handler(sender: object, payload: Registered) -> None:
        pass

    with pytest.raises(TypeError, match="thread=True"):
        make_signal().connect(handler, thread=True)


async def test_sync_receiver_returning_awaitable_is_awaited() -> None:
    """A plain callable that returns an awaitable has it awaited by the send."""
    signal = make_signal()

    async def target(sender: object, payload: Registered) -> str:
        return "awaited"

    signal.connect(lambda sender, payload: target(sender, payload))
    results = await signal.send(Service, user_id=1)
    assert results[0][1] == "awaited"


# -- once ----------------------------------------------------------------------------------


async def test_once_receiver_is_delivered_once() -> None:
    """A once receiver is called on the first send and then disconnected."""
    signal = make_signal()
    calls: list[int] = []

    async def first_only(sender: object, payload: Registered) -> None:
        calls.append(payload.user_id)

    signal.connect(first_only, once=True)
    await signal.send(Service, user_id=1)
    await signal.send(Service, user_id=2)
    assert calls == [1]
    assert not signal.has_receivers_for(Service)


@pytest.mark.parametrize("mode", [Sequential(), Concurrent()])
async def test_once_under_100_concurrent_sends(mode: Sequential | Concurrent) -> None:
    """Under 100 concurrent sends a once receiver still runs exactly once."""
    signal = make_signal(mode=mode)
    calls: list[int] = []

    async def first_only(sender: object, payload: Registered) -> None:
        await anyio.lowlevel.checkpoint()
        calls.append(payload.user_id)

    async def other(sender: object, payload: Registered) -> None:
        await anyio.lowlevel.checkpoint()

    signal.connect(first_only, once=True)
    signal.connect(other)
    async with anyio.create_task_group() as group:
        for index in range(100):
            group.start_soon(functools.partial(signal.send, Service, user_id=index))
    assert len(calls) == 1


# -- receivers_for / snapshots --------------------------------------------------------------


async def test_connect_during_send_does_not_change_that_send() -> None:
    """Receivers connected or disconnected by a receiver apply to later sends only."""
    signal = make_signal()
    log: list[str] = []

    async def late(sender: object, payload: Registered) -> None:
        log.append("late")

    async def victim(sender: object, payload: Registered) -> None:
        log.append("victim")

    async def meddler(sender: object, payload: Registered) -> None:
        log.append("meddler")
        signal.connect(late)
        signal.disconnect(victim)

    signal.connect(meddler)
    signal.connect(victim)
    await signal.send(Service, user_id=1)
    assert log == ["meddler", "victim"]
    log.clear()
    await signal.send(Service, user_id=1)
    assert log == ["meddler", "late"]


async def test_has_receivers_for() -> None:
    """has_receivers_for tells whether a send from that sender would reach anyone."""
    signal = make_signal()

    async def handler(sender: object, payload: Registered) -> None:
        pass

    assert not signal.has_receivers_for(Service)
    signal.connect(handler, sender=Service)
    assert signal.has_receivers_for(Service)
    assert not signal.has_receivers_for(object())


def test_repr_names_signal() -> None:
    """The repr names the signal and its payload type."""
    assert "user_registered[Registered]" in repr(make_signal(name="user_registered"))


def test_validate_returns_the_payload_as_a_send_delivers_it() -> None:
    """validate() passes the payload type, rebuilds a subclass, validates a dict, or raises."""

    class Special(Registered):
        extra: int = 0

    signal = make_signal()
    payload = Registered(user_id=1)
    assert signal.validate(payload) is payload
    rebuilt = signal.validate(Special(user_id=2, extra=1))
    assert type(rebuilt) is Registered
    assert rebuilt.user_id == 2
    assert signal.validate({"user_id": 3}) == Registered(user_id=3)
    with pytest.raises(ValidationError):
        signal.validate({"user_id": "x"})


def test_an_unknown_connect_option_is_a_type_error() -> None:
    """connect() with a keyword it does not take fails at once, naming it."""
    signal = make_signal()
    with pytest.raises(TypeError, match="prio"):
        signal.connect(lambda sender, payload: None, prio=1)  # type: ignore[call-overload]


def test_an_unknown_connect_option_is_named_after_connect() -> None:
    """connect(), @connect(...) and @receiver(...) refuse an unknown keyword when called."""
    signal = make_signal()
    with pytest.raises(TypeError, match=r"^connect\(\) got an unexpected keyword argument 'prio'"):
        signal.connect(lambda sender, payload: None, prio=1)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=r"^connect\(\) got an unexpected keyword argument 'prio'"):
        signal.connect(prio=1)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=r"^receiver\(\) got an unexpected keyword argument 'prio'"):
        receiver(signal, prio=1)  # type: ignore[call-arg]
    assert not signal.connections


@pytest.mark.parametrize("priority", [True, 1.5, "1", None])
def test_a_priority_that_is_not_an_integer_is_a_type_error(priority: Any) -> None:
    """A priority that is a bool, float, string or None fails at connect, naming the option."""
    signal = make_signal()
    with pytest.raises(TypeError, match=r"connect\(priority=\.\.\.\) must be an integer"):
        signal.connect(lambda sender, payload: None, priority=priority)
    with pytest.raises(TypeError, match=r"priority=\.\.\.\) must be an integer"):
        signal.connected_to(lambda sender, payload: None, priority=priority).__enter__()
    assert not signal.connections


def test_a_phase_that_is_not_a_phase_is_a_type_error() -> None:
    """connect(phase="after_commit") fails at connect, not by running the receiver at once."""
    signal = make_signal()
    with pytest.raises(TypeError, match=r"connect\(phase=\.\.\.\) must be a Phase"):
        signal.connect(lambda sender, payload: None, phase="after_commit")  # type: ignore[call-overload]
    assert not signal.connections


@pytest.mark.parametrize("mode", [Sequential(), Concurrent()])
async def test_a_send_timeout_replaces_the_signals_and_a_receivers_own_still_applies(
    mode: Sequential | Concurrent,
) -> None:
    """send(timeout=...) stands in for the signal's timeout; the receiver's own is kept."""
    signal = make_signal(mode=mode, timeout=0.001)

    async def takes_a_while(sender: Any, payload: Registered) -> str:
        await anyio.sleep(0.02)
        return "done"

    signal.connect(takes_a_while)
    assert [r for _, r in await signal.send(None, user_id=1, timeout=5)] == ["done"]
    signal.disconnect(takes_a_while)
    signal.connect(takes_a_while, timeout=0.001)
    [(_, failure)] = await signal.send(None, user_id=1, timeout=5, errors="collect")
    assert isinstance(failure, TimeoutError)


@pytest.mark.parametrize(
    ("option", "error"),
    [
        ({"errors": "ignore"}, ValueError),
        ({"timeout": True}, TypeError),
        ({"timeout": -1}, ValueError),
        ({"mode": Concurrent}, TypeError),
    ],
)
async def test_a_bad_send_option_fails_with_no_receiver_too(
    option: dict[str, Any], error: type[Exception]
) -> None:
    """A bad send option fails at the send even when no receiver is connected yet."""
    signal = make_signal()
    with pytest.raises(error):
        await signal.send(None, user_id=1, **option)
