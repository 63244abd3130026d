"""
Models and durable receivers for the outbox tests, importable by a relay subprocess
(``aiosignals relay --app tests.outbox.app``).

The receivers record each delivery in ``DELIVERED`` and, when the environment names a file
in ``AIOSIGNALS_TEST_DELIVERY_LOG``, append it there so another process can read it.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.lowlevel
from sqlalchemy.orm import DeclarativeBase, Mapped, MappedAsDataclass, mapped_column

from aiosignals import Event, Signal, receiver
from aiosignals.models import PostSave, post_save
from aiosignals.outbox import current_delivery


class Base(MappedAsDataclass, DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int | None] = mapped_column(primary_key=True, init=False, default=None)
    item: Mapped[str]


class Job(Event):
    n: int


job_done = Signal(Job, name="tests.outbox.job_done")

DELIVERED: list[tuple[int, int, str]] = []
"""(delivery id, attempt, item) of each delivery to ``record_order``."""

FLAKY: dict[str, int] = {}
"""item -> how many more times its delivery fails."""

BROKEN: set[str] = {"poison"}
"""Items whose delivery always fails."""

SLOW: dict[str, float] = {"slow": 1.0}
"""item -> seconds its delivery takes."""

GATES: dict[str, tuple[anyio.Event, anyio.Event]] = {}
"""item -> (set when its delivery starts, awaited before it finishes): a test decides how long."""


STUBBORN: dict[str, int] = {}
"""item -> how many more of its deliveries ignore cancellation for ``STUBBORN_SECONDS``."""

STUBBORN_SECONDS = 2.0


def _log(line: str) -> None:
    path = os.environ.get("AIOSIGNALS_TEST_DELIVERY_LOG")
    if path:
        # Closed at once: the kernel has the line even if the process is SIGKILLed next.
        with Path(path).open("a") as log:
            log.write(line + "\n")


@receiver(post_save, sender=Order, durable=True, dispatch_uid="tests.outbox.record_order")
async def record_order(sender: type[Order], payload: PostSave[Order]) -> None:
    delivery = current_delivery()
    assert delivery is not None
    item = payload.instance.item
    if item in BROKEN:
        raise RuntimeError(f"cannot handle {item}")
    if item == "cancelled":
        # Not a cancellation of the relay: the receiver's own (buggy) raise.
        raise asyncio.CancelledError
    if item == os.environ.get("AIOSIGNALS_TEST_KILL_ITEM"):
        # The receiver takes its whole process down, as a segfaulting C extension would.
        _log(f"killing {delivery.id} {delivery.attempt} {item}")
        os.kill(os.getpid(), signal.SIGKILL)
    if FLAKY.get(item, 0) > 0:
        FLAKY[item] -= 1
        raise RuntimeError(f"flaky {item}")
    if item == os.environ.get("AIOSIGNALS_TEST_BLOCK_ITEM"):
        _log(f"started {delivery.id} {delivery.attempt} {item}")
        await anyio.sleep_forever()
    if STUBBORN.get(item, 0) > 0:
        STUBBORN[item] -= 1
        # Deaf to cancellation, as a blocking call in a thread is: only the lease helps.
        with anyio.CancelScope(shield=True):
            await anyio.sleep(STUBBORN_SECONDS)
    if item in GATES:
        started, release = GATES[item]
        started.set()
        await release.wait()
    if item in SLOW:
        _log(f"started {delivery.id} {delivery.attempt} {item}")
        await anyio.sleep(SLOW[item])
    DELIVERED.append((delivery.id, delivery.attempt, item))
    _log(f"delivered {delivery.id} {delivery.attempt} {item} {payload.instance.id}")


IN_FLIGHT: set[int] = set()
OVERLAPS: list[int] = []
JOBS: list[tuple[int, str]] = []
"""(delivery id, receiver) of each job delivery."""


def _job_receiver(uid: str) -> Any:
    async def deliver(sender: str, payload: Job) -> None:
        delivery = current_delivery()
        assert delivery is not None
        if delivery.id in IN_FLIGHT:
            OVERLAPS.append(delivery.id)
        IN_FLIGHT.add(delivery.id)
        await anyio.lowlevel.checkpoint()
        IN_FLIGHT.discard(delivery.id)
        JOBS.append((delivery.id, uid))
        _log(f"job {delivery.id} {delivery.attempt} {uid}")

    job_done.connect(deliver, durable=True, dispatch_uid=uid)
    return deliver


JOB_RECEIVERS = [_job_receiver(f"tests.outbox.job.{i}") for i in range(4)]


class Step(Event):
    """A step of one of several sequences: its rows keep the order of their ``ordering_key``."""

    ordering_key: str
    seq: int


step = Signal(Step, name="tests.outbox.step")
STEPS: list[tuple[str, str, int]] = []
"""(receiver, ordering key, seq) of each delivery of a step."""


def _step_receiver(uid: str, *, ordering: Literal["key", "receiver"]) -> Any:
    async def deliver(sender: str, payload: Step) -> None:
        if payload.ordering_key == os.environ.get("AIOSIGNALS_TEST_FAIL_KEY") and uid.endswith(
            "by_key"
        ):
            _log(f"failing {uid} {payload.ordering_key} {payload.seq} {os.getpid()}")
            raise RuntimeError(f"cannot handle {payload.ordering_key}")
        # Long enough that two relays' deliveries overlap in time.
        await anyio.sleep(float(os.environ.get("AIOSIGNALS_TEST_STEP_SECONDS", "0")))
        STEPS.append((uid, payload.ordering_key, payload.seq))
        _log(f"step {uid} {payload.ordering_key} {payload.seq} {os.getpid()}")

    step.connect(deliver, durable=True, dispatch_uid=uid, ordering=ordering)
    return deliver


STEP_BY_KEY = _step_receiver("tests.outbox.step.by_key", ordering="key")
STEP_STRICT = _step_receiver("tests.outbox.step.strict", ordering="receiver")
