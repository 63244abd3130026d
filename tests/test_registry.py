"""The registry of named signals, as transports and the outbox relay use it."""

from __future__ import annotations

import gc
import weakref

import pytest

from aiosignals import Event, Signal
from aiosignals._signal import registry

pytestmark = pytest.mark.anyio


class Paid(Event):
    amount: int


async def test_durable_receiver_delivers_to_the_receiver_named_by_its_uid() -> None:
    """durable_receiver(name, uid) finds the durable receiver and delivers a payload to it."""
    signal = Signal(Paid, name="test_registry.paid")
    seen: list[tuple[object, int]] = []

    async def bill(sender: object, payload: Paid) -> str:
        seen.append((sender, payload.amount))
        return "billed"

    signal.connect(bill, dispatch_uid="bill", durable=True)
    target = registry.durable_receiver("test_registry.paid", "bill")
    assert target is not None
    assert target.signal is signal
    assert target.receiver is bill
    assert await target.deliver("shop", Paid(amount=3)) == "billed"
    assert seen == [("shop", 3)]


def test_durable_receiver_is_none_for_an_unknown_name_or_uid() -> None:
    """An unknown signal name or uid finds nothing."""
    signal = Signal(Paid, name="test_registry.known")
    signal.connect(lambda sender, payload: None, dispatch_uid="known")
    assert registry.durable_receiver("test_registry.unknown", "known") is None
    assert registry.durable_receiver("test_registry.known", "other") is None
    assert registry.durable_receiver("test_registry.known", "known") is not None


def test_durable_receiver_is_none_once_a_weak_receiver_is_collected() -> None:
    """A weakly held receiver that was collected is not handed to the relay."""

    class Handler:
        async def handle(self, sender: object, payload: Paid) -> None:
            pass

    signal = Signal(Paid, name="test_registry.weak")
    handler = Handler()
    signal.connect(handler.handle, dispatch_uid="handle")
    assert registry.durable_receiver("test_registry.weak", "handle") is not None
    del handler
    gc.collect()
    assert registry.durable_receiver("test_registry.weak", "handle") is None


def test_a_signal_and_its_receivers_go_with_their_last_reference() -> None:
    """A signal holds no reference cycle: it and its receivers go without the collector."""

    async def handler(sender: object, payload: Paid) -> None:
        pass

    signal = Signal(Paid, name="test_registry.gone")
    signal.connect(handler)
    signal.connect(handler, sender=object, once=True)
    signal_ref = weakref.ref(signal)
    handler_ref = weakref.ref(handler)
    gc.disable()
    try:
        del signal, handler
        assert signal_ref() is None
        assert handler_ref() is None
        assert registry.get("test_registry.gone") is None
    finally:
        gc.enable()
