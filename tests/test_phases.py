from __future__ import annotations

import dataclasses
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from aiosignals import Event, Phase, RecursionDepthError, Signal
from aiosignals._phases import PhaseScope, current_scope

pytestmark = pytest.mark.anyio


class Saved(Event):
    n: int = 0


class Tx:
    """Records what a persistence layer's commit and rollback would do."""

    def __init__(self, log: list[str], *, fail_commit: bool = False) -> None:
        self.log = log
        self.fail_commit = fail_commit

    async def commit(self) -> None:
        if self.fail_commit:
            raise ConnectionError("commit failed")
        self.log.append("COMMIT")

    async def rollback(self) -> None:
        self.log.append("ROLLBACK")


def _recorder(log: list[str], name: str) -> Any:
    async def record(sender: object, payload: Saved) -> None:
        log.append(f"{name}:{payload.n}")

    return record


def _signal(log: list[str]) -> Signal[Saved]:
    signal = Signal(Saved, name="saved")
    signal.connect(_recorder(log, "now"))
    signal.connect(_recorder(log, "before"), phase=Phase.BEFORE_COMMIT)
    signal.connect(_recorder(log, "after"), phase=Phase.AFTER_COMMIT)
    signal.connect(_recorder(log, "rolled"), phase=Phase.AFTER_ROLLBACK)
    return signal


async def test_outside_transaction_after_commit_runs_at_once() -> None:
    """With no transaction, BEFORE/AFTER_COMMIT receivers run at once; AFTER_ROLLBACK never."""
    log: list[str] = []
    signal = _signal(log)
    results = await signal.send(None, n=1)
    assert log == ["now:1", "before:1", "after:1"]
    assert len(results) == 3


async def test_commit_runs_phases_in_order() -> None:
    """In a transaction: immediate now, before-commit, COMMIT, then after-commit in send order."""
    log: list[str] = []
    signal = _signal(log)
    tx = Tx(log)
    async with PhaseScope.run(commit=tx.commit, rollback=tx.rollback):
        results = await signal.send(None, n=1)
        await signal.send(None, n=2)
        assert [fn.__qualname__ for fn, _ in results] == ["_recorder.<locals>.record"]
    assert log == ["now:1", "now:2", "before:1", "before:2", "COMMIT", "after:1", "after:2"]
    assert current_scope() is None


async def test_rollback_runs_only_after_rollback_receivers() -> None:
    """On an exception the transaction rolls back and only AFTER_ROLLBACK receivers run."""
    log: list[str] = []
    signal = _signal(log)
    tx = Tx(log)
    with pytest.raises(LookupError):
        async with PhaseScope.run(commit=tx.commit, rollback=tx.rollback):
            await signal.send(None, n=1)
            raise LookupError
    assert log == ["now:1", "ROLLBACK", "rolled:1"]


async def test_before_commit_veto_rolls_back() -> None:
    """A BEFORE_COMMIT receiver that raises vetoes the commit: rollback, no after-commit."""
    log: list[str] = []
    signal = _signal(log)

    async def veto(sender: object, payload: Saved) -> None:
        raise PermissionError("vetoed")

    signal.connect(veto, phase=Phase.BEFORE_COMMIT)
    tx = Tx(log)
    with pytest.raises(PermissionError, match="vetoed"):
        async with PhaseScope.run(commit=tx.commit, rollback=tx.rollback):
            await signal.send(None, n=1)
    assert "COMMIT" not in log
    assert "after:1" not in log
    assert log[-2:] == ["ROLLBACK", "rolled:1"]


async def test_failing_commit_rolls_back() -> None:
    """A commit that fails rolls back and runs AFTER_ROLLBACK receivers, never after-commit."""
    log: list[str] = []
    signal = _signal(log)
    tx = Tx(log, fail_commit=True)
    with pytest.raises(ConnectionError):
        async with PhaseScope.run(commit=tx.commit, rollback=tx.rollback):
            await signal.send(None, n=1)
    assert log == ["now:1", "before:1", "ROLLBACK", "rolled:1"]


async def test_after_commit_failure_goes_to_the_policy() -> None:
    """A failing after-commit receiver cannot undo the commit; others still run; raise re-raises."""
    log: list[str] = []
    signal = _signal(log)

    async def broken(sender: object, payload: Saved) -> None:
        raise ValueError("after-commit failure")

    signal.connect(broken, phase=Phase.AFTER_COMMIT, priority=1)
    tx = Tx(log)
    with pytest.raises(ValueError, match="after-commit failure"):
        async with PhaseScope.run(commit=tx.commit, rollback=tx.rollback):
            await signal.send(None, n=1)
    assert "COMMIT" in log
    assert log[-1] == "after:1"  # the other after-commit receiver still ran
    assert "ROLLBACK" not in log


async def test_after_commit_failure_is_logged_under_collect(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Under collect, an after-commit failure is logged: nobody is there to receive it."""
    signal = Signal(Saved, name="saved", errors="collect")

    async def broken(sender: object, payload: Saved) -> None:
        raise ValueError("lost?")

    signal.connect(broken, phase=Phase.AFTER_COMMIT)
    tx = Tx([])
    async with PhaseScope.run(commit=tx.commit, rollback=tx.rollback):
        await signal.send(None)
    assert any("lost?" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


async def test_savepoint_rollback_drops_only_inner_receivers() -> None:
    """Rolling back a nested scope drops its deferred receivers and keeps the outer ones."""
    log: list[str] = []
    signal = _signal(log)
    outer, inner = Tx(log), Tx([])
    inner_log: list[str] = []
    inner = Tx(inner_log)
    async with PhaseScope.run(commit=outer.commit, rollback=outer.rollback):
        await signal.send(None, n=1)
        with pytest.raises(LookupError):
            async with PhaseScope.run(commit=inner.commit, rollback=inner.rollback):
                await signal.send(None, n=2)
                raise LookupError
        async with PhaseScope.run(commit=inner.commit, rollback=inner.rollback):
            await signal.send(None, n=3)
    assert inner_log == ["ROLLBACK", "COMMIT"]
    assert log == [
        "now:1", "now:2", "rolled:2", "now:3",
        "before:1", "before:3", "COMMIT", "after:1", "after:3",
    ]  # fmt: skip


async def test_concurrent_transactions_are_isolated() -> None:
    """Deferred receivers of a transaction in one task never run for another task's commit."""
    log: list[str] = []
    signal = Signal(Saved)
    signal.connect(_recorder(log, "after"), phase=Phase.AFTER_COMMIT)
    first_sent = anyio.Event()
    second_done = anyio.Event()

    async def first() -> None:
        tx = Tx(log)
        with pytest.raises(LookupError):
            async with PhaseScope.run(commit=tx.commit, rollback=tx.rollback):
                await signal.send(None, n=1)
                first_sent.set()
                await second_done.wait()
                raise LookupError

    async def second() -> None:
        await first_sent.wait()
        tx = Tx(log)
        async with PhaseScope.run(commit=tx.commit, rollback=tx.rollback):
            await signal.send(None, n=2)
        second_done.set()

    async with anyio.create_task_group() as group:
        group.start_soon(first)
        group.start_soon(second)
    assert log == ["COMMIT", "after:2", "ROLLBACK"]


async def test_once_receiver_in_phase_fires_once() -> None:
    """A once receiver deferred to after-commit runs once, after the commit."""
    log: list[str] = []
    signal = Signal(Saved)
    signal.connect(_recorder(log, "once"), phase=Phase.AFTER_COMMIT, once=True)
    tx = Tx(log)
    async with PhaseScope.run(commit=tx.commit, rollback=tx.rollback):
        await signal.send(None, n=1)
        await signal.send(None, n=2)
    assert log == ["COMMIT", "once:1"]


async def test_durable_receiver_goes_to_the_sink() -> None:
    """Inside a scope with a durable sink a durable receiver is written there, not called."""
    log: list[str] = []
    written: list[tuple[str | None, str | None, object, Event]] = []
    signal = Signal(Saved, name="saved")
    signal.connect(_recorder(log, "durable"), durable=True, dispatch_uid="mail")

    async def sink(sig: Signal[Any], record: Any, sender: object, payload: Event) -> None:
        written.append((sig.name, record.dispatch_uid, sender, payload))

    tx = Tx(log)
    async with PhaseScope.run(commit=tx.commit, rollback=tx.rollback, durable_sink=sink):
        await signal.send("sender", n=1)
    assert written == [("saved", "mail", "sender", Saved(n=1))]
    assert log == ["COMMIT"]


async def test_durable_receiver_without_sink_runs_after_commit() -> None:
    """Without an outbox a durable receiver runs after commit, and at once outside a transaction."""
    log: list[str] = []
    signal = Signal(Saved, name="saved")
    signal.connect(_recorder(log, "durable"), durable=True, dispatch_uid="mail")
    tx = Tx(log)
    async with PhaseScope.run(commit=tx.commit, rollback=tx.rollback):
        await signal.send(None, n=1)
    await signal.send(None, n=2)
    assert log == ["COMMIT", "durable:1", "durable:2"]


def test_durable_needs_dispatch_uid_and_named_signal() -> None:
    """durable=True without a dispatch_uid, or on an unnamed signal, is a clear ValueError."""
    handler = _recorder([], "x")
    with pytest.raises(ValueError, match="dispatch_uid"):
        Signal(Saved, name="saved").connect(handler, durable=True)
    with pytest.raises(ValueError, match="named signal"):
        Signal(Saved).connect(handler, durable=True, dispatch_uid="x")


async def test_a_once_after_commit_receiver_is_not_spent_by_a_rollback() -> None:
    """A once receiver deferred to a transaction that rolls back is kept for the next one."""
    log: list[str] = []
    signal = Signal(Saved, name="saved")
    signal.connect(_recorder(log, "after"), phase=Phase.AFTER_COMMIT, once=True)
    with pytest.raises(LookupError):
        async with PhaseScope.run(commit=Tx(log).commit, rollback=Tx(log).rollback):
            await signal.send(None, n=1)
            raise LookupError
    for n in (2, 3):
        async with PhaseScope.run(commit=Tx(log).commit, rollback=Tx(log).rollback):
            await signal.send(None, n=n)
    assert log == ["ROLLBACK", "COMMIT", "after:2", "COMMIT"]


async def test_a_once_receiver_deferred_by_two_transactions_runs_once() -> None:
    """A once AFTER_COMMIT receiver sent twice in one transaction runs once, after its commit."""
    log: list[str] = []
    signal = Signal(Saved, name="saved")
    signal.connect(_recorder(log, "after"), phase=Phase.AFTER_COMMIT, once=True)
    async with PhaseScope.run(commit=Tx(log).commit, rollback=Tx(log).rollback):
        await signal.send(None, n=1)
        async with PhaseScope.run(commit=Tx(log).commit, rollback=Tx(log).rollback):
            pass
        await signal.send(None, n=2)
    assert log == ["COMMIT", "COMMIT", "after:1"]


async def test_deferred_receivers_keep_the_error_policy_and_timeout_of_their_send(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A send's errors= and timeout= apply to its receivers that run after the commit."""
    signal = Signal(Saved, name="saved")  # errors="raise" by default

    async def fails(sender: object, payload: Saved) -> None:
        raise ValueError(f"after commit {payload.n}")

    async def slow(sender: object, payload: Saved) -> None:
        await anyio.sleep(5)

    signal.connect(fails, phase=Phase.AFTER_COMMIT)
    log: list[str] = []
    async with PhaseScope.run(commit=Tx(log).commit, rollback=Tx(log).rollback):
        await signal.send(None, n=1, errors="log")  # logged, not raised
    assert "after commit 1" in caplog.text
    signal.disconnect(fails)

    signal.connect(slow, phase=Phase.AFTER_COMMIT)
    with anyio.fail_after(2), pytest.raises(TimeoutError):
        async with PhaseScope.run(commit=Tx(log).commit, rollback=Tx(log).rollback):
            await signal.send(None, n=2, timeout=0.05)


async def test_after_rollback_receivers_of_a_cancelled_transaction_run_to_the_end() -> None:
    """A transaction cancelled in its body still runs its AFTER_ROLLBACK receivers in full."""
    log: list[str] = []
    signal = Signal(Saved, name="saved")

    async def rolled(sender: object, payload: Saved) -> None:
        log.append("start")
        await anyio.lowlevel.checkpoint()
        await anyio.lowlevel.checkpoint()
        log.append("end")

    signal.connect(rolled, phase=Phase.AFTER_ROLLBACK)
    with anyio.CancelScope() as cancelled:
        async with PhaseScope.run(commit=Tx(log).commit, rollback=Tx(log).rollback):
            await signal.send(None, n=1)
            cancelled.cancel()
            await anyio.lowlevel.checkpoint()
    assert cancelled.cancelled_caught
    assert log == ["ROLLBACK", "start", "end"]


async def test_a_shielded_after_rollback_receiver_still_has_its_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A hanging AFTER_ROLLBACK receiver of a cancelled transaction stops at its own timeout."""
    log: list[str] = []
    signal = Signal(Saved, name="saved")

    async def hangs(sender: object, payload: Saved) -> None:
        await anyio.sleep_forever()

    signal.connect(hangs, phase=Phase.AFTER_ROLLBACK, timeout=0.05)
    signal.connect(_recorder(log, "rolled"), phase=Phase.AFTER_ROLLBACK)
    with anyio.fail_after(5), anyio.CancelScope() as cancelled:
        async with PhaseScope.run(commit=Tx(log).commit, rollback=Tx(log).rollback):
            await signal.send(None, n=1)
            cancelled.cancel()
            await anyio.lowlevel.checkpoint()
    # The cancellation, not the receiver's TimeoutError, is what ends the block.
    assert cancelled.cancelled_caught
    assert log == ["ROLLBACK", "rolled:1"]
    assert "TimeoutError" in caplog.text


async def test_an_after_commit_receiver_that_saves_its_instance_again_hits_max_depth() -> None:
    """A receiver re-saving its own entity after each commit is stopped by RecursionDepthError."""
    from aiosignals.models import PostSave, post_save
    from aiosignals.repository import MemoryRepository

    @dataclasses.dataclass
    class Counter:
        id: int | None = None
        n: int = 0

    repo = MemoryRepository(Counter)
    saves: list[int] = []

    async def again(sender: type[Counter], payload: PostSave[Counter]) -> None:
        saves.append(payload.instance.n)
        payload.instance.n += 1
        await repo.save(payload.instance)

    post_save.connect(again, sender=Counter, phase=Phase.AFTER_COMMIT)
    try:
        with pytest.raises(RecursionDepthError, match="max_depth=8"):
            await repo.save(Counter())
    finally:
        post_save.disconnect(again, sender=Counter)
    assert len(saves) == post_save.max_depth


async def test_a_transaction_cancelled_while_committing_follows_the_commit() -> None:
    """Cancelled while its COMMIT is in flight, a transaction that commits runs AFTER_COMMIT."""
    log: list[str] = []
    signal = _signal(log)
    committing, release = anyio.Event(), anyio.Event()
    scope = anyio.CancelScope()

    async def commit() -> None:
        committing.set()
        await release.wait()
        log.append("COMMIT")

    async def transaction() -> None:
        with scope:
            async with PhaseScope.run(commit=commit, rollback=Tx(log).rollback):
                await signal.send(None, n=1)

    async with anyio.create_task_group() as group:
        group.start_soon(transaction)
        await committing.wait()
        scope.cancel()
        await anyio.wait_all_tasks_blocked()
        release.set()
    assert log == ["now:1", "before:1", "COMMIT", "after:1"]
