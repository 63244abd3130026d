"""The relay's scheduling over an in-memory outbox, with a clock the tests move forward."""

from __future__ import annotations

from typing import Literal

import anyio
import anyio.lowlevel
import pytest

from aiosignals import Event, Signal
from aiosignals.outbox import Delivery, MemoryOutboxStore, OutboxRelay, current_delivery
from tests.outbox.clock import Clock

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    # No database driver here: the memory store runs on both backends.
    backend: str = request.param
    return backend


class Note(Event):
    text: str


note = Signal(Note, name="tests.outbox.scheduling.note")
CALLS: list[tuple[str, str, int]] = []
"""(receiver, text, attempt) of each call."""
FAILING: dict[str, int] = {}
"""text -> how many more calls with it fail."""


def _receiver(uid: str) -> None:
    async def deliver(sender: str, payload: Note) -> None:
        delivery = current_delivery()
        assert delivery is not None
        if FAILING.get(payload.text, 0) > 0:
            FAILING[payload.text] -= 1
            raise RuntimeError(f"failing {payload.text}")
        CALLS.append((uid, payload.text, delivery.attempt))

    note.connect(deliver, durable=True, dispatch_uid=uid)


_receiver("a")
_receiver("b")


@pytest.fixture(autouse=True)
def fresh() -> None:
    CALLS.clear()
    FAILING.clear()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store() -> MemoryOutboxStore:
    return MemoryOutboxStore("mem")


def send(store: MemoryOutboxStore, clock: Clock, text: str, *uids: str) -> None:
    for uid in uids or ("a", "b"):
        store.write(note, "tests", Note(text=text), dispatch_uid=uid, now=clock())


def relay(store: MemoryOutboxStore, clock: Clock, **options: float) -> OutboxRelay:
    return OutboxRelay(store, clock=clock, **options)  # type: ignore[arg-type]


async def test_rows_are_delivered_once_in_order_with_a_delivery_of_the_store() -> None:
    """Each row is delivered once, in commit order, with the store's name in its key."""
    clock, store = Clock(), MemoryOutboxStore("mem")
    keys: list[str] = []

    async def keep_key(sender: str, payload: Note) -> None:
        delivery = current_delivery()
        assert isinstance(delivery, Delivery)
        keys.append(delivery.key)

    note.connect(keep_key, durable=True, dispatch_uid="keys")
    try:
        for text in ("one", "two"):
            send(store, clock, text, "a", "keys")
        assert await relay(store, clock).run_once() == 4
    finally:
        note.disconnect(dispatch_uid="keys")
    assert CALLS == [("a", "one", 1), ("a", "two", 1)]
    assert keys == ["outbox:mem:2", "outbox:mem:4"]
    assert await store.rows() == []


async def test_a_failing_row_holds_back_its_receiver_until_its_backoff_is_over(
    store: MemoryOutboxStore, clock: Clock
) -> None:
    """A failed row waits out its backoff, its receiver's later rows behind it; others go on."""
    FAILING["first"] = 1
    send(store, clock, "first")
    send(store, clock, "second")
    outbox_relay = relay(store, clock, backoff=10.0)
    assert await outbox_relay.run_once() == 3  # b's two rows, and a's failure
    assert CALLS == [("b", "first", 1), ("b", "second", 1)]
    (failed, waiting) = await store.rows()
    # Jittered between half and all of the first delay.
    assert clock() + 5 <= failed.available_at <= clock() + 10
    assert "failing first" in (failed.last_error or "")
    assert await outbox_relay.run_once() == 0  # "second" waits behind "first", though due
    clock.advance(10)
    assert await outbox_relay.run_once() == 2
    assert CALLS[2:] == [("a", "first", 2), ("a", "second", 1)]
    assert waiting.dispatch_uid == "a"


async def test_a_row_is_parked_dead_after_max_attempts_and_requeued_on_demand(
    store: MemoryOutboxStore, clock: Clock
) -> None:
    """After max_attempts failures a row is dead; requeue makes it pending with attempts reset."""
    FAILING["poison"] = 3
    send(store, clock, "poison", "a")
    outbox_relay = relay(store, clock, max_attempts=3, backoff=1.0)
    for _ in range(3):
        await outbox_relay.run_once()
        clock.advance(10)
    (row,) = await store.rows()
    assert (row.status, row.attempts, row.failures) == ("dead", 3, 3)
    assert await outbox_relay.run_once() == 0
    assert await store.requeue([], clock()) == 1
    assert await outbox_relay.run_once() == 1
    assert CALLS == [("a", "poison", 1)]


async def test_a_row_leased_by_a_dead_relay_is_delivered_once_its_lease_runs_out(
    store: MemoryOutboxStore, clock: Clock
) -> None:
    """A dead relay's row stays leased: another relay takes it once the lease has run out."""
    send(store, clock, "held", "a")
    # The dead relay had claimed the row and started its receiver (attempts raised).
    claimed = await store.claim(
        "dead-relay", now=clock(), lease=30.0, limit=10, skip=(), mark=lambda rows: [rows[0].id]
    )
    assert [row.attempts for row in claimed] == [0]
    outbox_relay = relay(store, clock, lease=30.0)
    assert await outbox_relay.run_once() == 0
    clock.advance(29)
    assert await outbox_relay.run_once() == 0
    clock.advance(2)
    assert await outbox_relay.run_once() == 1
    assert CALLS == [("a", "held", 2)]


async def test_purge_deletes_dead_rows_only(store: MemoryOutboxStore, clock: Clock) -> None:
    """purge deletes the dead rows and leaves the pending ones."""
    FAILING["poison"] = 1
    send(store, clock, "poison", "a")
    await relay(store, clock, max_attempts=1).run_once()
    send(store, clock, "fine", "a")
    assert await store.purge([]) == 1
    assert [row.status for row in await store.rows()] == ["pending"]


class Keyed(Event):
    ordering_key: str
    seq: int


keyed = Signal(Keyed, name="tests.outbox.scheduling.keyed")
SEEN: list[tuple[str, str, int]] = []
"""(receiver, key, seq) of each call of a keyed receiver."""
FAIL_KEYS: set[str] = set()
"""Keys whose first call fails (once)."""


class Gate:
    """Lets receivers through once *width* of them are in flight at the same time."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.in_flight = 0
        self.most = 0
        self.open = anyio.Event()

    async def pass_through(self) -> None:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        if self.in_flight >= self.width:
            self.open.set()
        with anyio.fail_after(5):
            await self.open.wait()
        await anyio.lowlevel.checkpoint()
        self.in_flight -= 1


GATE: list[Gate] = []


def _keyed_receiver(uid: str, ordering: Literal["key", "receiver"]) -> None:
    async def deliver(sender: str, payload: Keyed) -> None:
        if payload.ordering_key in FAIL_KEYS:
            FAIL_KEYS.discard(payload.ordering_key)
            raise RuntimeError(f"failing {payload.ordering_key}")
        if GATE:
            await GATE[0].pass_through()
        SEEN.append((uid, payload.ordering_key, payload.seq))

    keyed.connect(deliver, durable=True, dispatch_uid=uid, ordering=ordering)


_keyed_receiver("by_key", "key")
_keyed_receiver("strict", "receiver")


@pytest.fixture(autouse=True)
def fresh_keyed() -> None:
    SEEN.clear()
    FAIL_KEYS.clear()
    GATE.clear()


def send_keyed(store: MemoryOutboxStore, clock: Clock, key: str, seq: int, uid: str) -> None:
    ordering: Literal["key", "receiver"] = "receiver" if uid == "strict" else "key"
    payload = Keyed(ordering_key=key, seq=seq)
    store.write(keyed, "tests", payload, dispatch_uid=uid, now=clock(), ordering=ordering)


def send_rounds(store: MemoryOutboxStore, clock: Clock, rounds: int, uid: str) -> None:
    """Send *rounds* rows of keys "a" and "b", alternately, for the receiver *uid*."""
    for seq in range(rounds):
        for key in "ab":
            send_keyed(store, clock, key, seq, uid)


def seqs(uid: str, key: str) -> list[int]:
    return [seq for receiver, k, seq in SEEN if receiver == uid and k == key]


async def test_keys_are_delivered_side_by_side_up_to_the_concurrency(
    store: MemoryOutboxStore, clock: Clock
) -> None:
    """Rows of different keys run at the same time, never more keys at once than concurrency."""
    GATE.append(Gate(3))
    for seq in range(4):
        for key in "abcde":
            send_keyed(store, clock, key, seq, "by_key")
    assert await relay(store, clock, concurrency=3).run_once() == 20
    assert GATE[0].most == 3
    for key in "abcde":
        assert seqs("by_key", key) == [0, 1, 2, 3]


async def test_a_failing_row_holds_back_only_its_own_key(
    store: MemoryOutboxStore, clock: Clock
) -> None:
    """A failed row holds back the later rows of its key; the other keys are delivered."""
    FAIL_KEYS.add("a")
    send_rounds(store, clock, 3, "by_key")
    outbox_relay = relay(store, clock, backoff=10.0)
    await outbox_relay.run_once()
    assert (seqs("by_key", "a"), seqs("by_key", "b")) == ([], [0, 1, 2])
    assert await outbox_relay.run_once() == 0  # "a" 1 and 2 wait behind "a" 0, though due
    clock.advance(10)
    assert await outbox_relay.run_once() == 3
    assert seqs("by_key", "a") == [0, 1, 2]


async def test_ordering_receiver_keeps_one_order_over_all_its_rows(
    store: MemoryOutboxStore, clock: Clock
) -> None:
    """With ordering="receiver", a failed row holds back every later row of its receiver."""
    FAIL_KEYS.add("a")
    send_rounds(store, clock, 2, "strict")
    assert {row.ordering_key for row in await store.rows()} == {""}
    outbox_relay = relay(store, clock, backoff=10.0)
    await outbox_relay.run_once()
    assert SEEN == []
    clock.advance(10)
    await outbox_relay.run_once()
    assert SEEN == [("strict", "a", 0), ("strict", "b", 0), ("strict", "a", 1), ("strict", "b", 1)]


def test_ordering_must_be_key_or_receiver() -> None:
    """connect() refuses an ordering other than "key" and "receiver"."""

    async def receiver(sender: str, payload: Keyed) -> None:
        pass

    with pytest.raises(ValueError, match="ordering must be 'key' or 'receiver'"):
        keyed.connect(receiver, durable=True, dispatch_uid="bad", ordering="entity")  # type: ignore[call-overload]  # pyright: ignore[reportArgumentType]
    assert [c.ordering for c in keyed.connections if c.dispatch_uid == "strict"] == ["receiver"]
