"""The behaviour every repository backend shares: memory, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import pytest

from aiosignals import Concurrent, Phase, TransactionAborted
from aiosignals.models import (
    PostDelete,
    PostSave,
    PreDelete,
    PreSave,
    post_delete,
    post_save,
    pre_delete,
    pre_save,
)
from aiosignals.repository import IntegrityError, NotFound
from aiosignals.testing import capture

if TYPE_CHECKING:
    from .conftest import Backend

pytestmark = pytest.mark.anyio
Listen = Callable[..., None]


class Veto(Exception):
    pass


async def test_add_assigns_a_key_and_sends_pre_and_post_save_around_the_write(
    backend: Backend, listen: Listen
) -> None:
    """add() gives the entity a key; pre_save sees no row yet and post_save sees the stored row."""
    seen: list[tuple[str, bool, bool]] = []

    async def before(sender: Any, payload: PreSave[Any]) -> None:
        assert sender is backend.User
        stored = await backend.users.list(email="a@x")
        seen.append(("pre", payload.created, bool(stored)))

    async def after(sender: Any, payload: PostSave[Any]) -> None:
        stored = await backend.users.get(payload.instance.id)
        seen.append(("post", payload.created, stored is not None))

    listen(pre_save, before, backend.User)
    listen(post_save, after, backend.User)
    user = await backend.users.add(backend.User(email="a@x"))

    assert user.id is not None
    assert seen == [("pre", True, False), ("post", True, True)]


async def test_created_is_true_exactly_on_insert_also_with_a_caller_set_key(
    backend: Backend, listen: Listen
) -> None:
    """created is True for each insert, even with a key set by the caller, and False on update."""
    created: list[bool] = []

    async def record(sender: Any, payload: PostSave[Any]) -> None:
        created.append(payload.created)

    listen(post_save, record, backend.User)
    user = backend.User(id=42, email="k@x")
    await backend.users.save(user)
    user.name = "Kay"
    await backend.users.save(user)
    await backend.users.save(backend.User(email="new@x"))

    assert created == [True, False, True]
    stored = await backend.users.get(42)
    assert stored is not None
    assert stored.name == "Kay"


async def test_a_receiver_of_another_sender_is_not_called(backend: Backend, listen: Listen) -> None:
    """A receiver connected for one model class is not called when another class is saved."""
    calls: list[Any] = []

    async def record(sender: Any, payload: PostSave[Any]) -> None:
        calls.append(sender)

    listen(post_save, record, backend.Profile)
    await backend.users.add(backend.User(email="a@x"))
    assert calls == []


async def test_pre_save_vetoes_the_write_by_raising(backend: Backend, listen: Listen) -> None:
    """A pre_save receiver that raises vetoes the insert or update: no row, no post_save."""
    posts: list[str] = []

    async def veto(sender: Any, payload: PreSave[Any]) -> None:
        if payload.instance.email.endswith("@spam"):
            raise Veto

    async def record(sender: Any, payload: PostSave[Any]) -> None:
        posts.append(payload.instance.email)

    listen(pre_save, veto, backend.User)
    listen(post_save, record, backend.User)
    with pytest.raises(Veto):
        await backend.users.add(backend.User(email="x@spam"))
    user = await backend.users.add(backend.User(email="ok@x"))
    user.email = "now@spam"
    with pytest.raises(Veto):
        await backend.users.save(user)

    assert [u.email for u in await backend.users.list()] == ["ok@x"]
    assert posts == ["ok@x"]


async def test_update_fields_limits_the_update_and_reaches_the_payloads(
    backend: Backend, listen: Listen
) -> None:
    """save(update_fields=...) writes only those columns, and both payloads carry the field set."""
    fields: list[frozenset[str] | None] = []

    async def record(sender: Any, payload: PreSave[Any] | PostSave[Any]) -> None:
        fields.append(payload.update_fields)

    listen(pre_save, record, backend.User)
    listen(post_save, record, backend.User)
    user = await backend.users.add(backend.User(email="a@x", name="A"))
    user.email = "changed@x"
    user.name = "Changed"
    await backend.users.save(user, update_fields=["name"])

    stored = await backend.users.get(user.id)
    assert stored is not None
    assert (stored.email, stored.name) == ("a@x", "Changed")
    assert fields == [None, None, frozenset({"name"}), frozenset({"name"})]


async def test_bad_update_fields_are_refused_before_anything_is_sent(
    backend: Backend, listen: Listen
) -> None:
    """An unknown field, a bare string or a missing row in update_fields raises before any send."""
    calls: list[Any] = []

    async def record(sender: Any, payload: PreSave[Any]) -> None:
        calls.append(payload)

    user = await backend.users.add(backend.User(email="a@x"))
    listen(pre_save, record, backend.User)
    with pytest.raises(ValueError, match="nickname"):
        await backend.users.save(user, update_fields=["nickname"])
    with pytest.raises(TypeError, match="not one string"):
        await backend.users.save(user, update_fields="name")
    with pytest.raises(NotFound, match="existing row"):
        await backend.users.save(backend.User(email="b@x"), update_fields=["name"])
    assert calls == []
    assert len(await backend.users.list()) == 1


async def test_update_fields_naming_the_key_is_a_value_error_as_in_django(
    backend: Backend, listen: Listen
) -> None:
    """save(update_fields=[<key>]) raises ValueError, sends nothing and writes nothing."""
    calls: list[Any] = []

    async def record(sender: Any, payload: Any) -> None:
        calls.append(payload)

    user = await backend.users.add(backend.User(email="a@x"))
    listen(pre_save, record, backend.User)
    listen(post_save, record, backend.User)
    user.name = "Changed"
    for fields in (["id"], ["id", "name"]):
        with pytest.raises(ValueError, match="primary key 'id'"):
            await backend.users.save(user, update_fields=fields)
    assert calls == []
    stored = await backend.users.get(user.id)
    assert stored is not None
    assert stored.name == ""


async def test_add_of_a_taken_key_raises_integrity_error_and_keeps_the_row(
    backend: Backend,
) -> None:
    """add() with a key already stored raises IntegrityError and leaves the first row unchanged."""
    await backend.users.add(backend.User(id=7, email="first@x"))
    with pytest.raises(IntegrityError):
        await backend.users.add(backend.User(id=7, email="second@x"))
    stored = await backend.users.get(7)
    assert stored is not None
    assert stored.email == "first@x"


async def test_delete_sends_pre_and_post_delete_and_pre_delete_vetoes(
    backend: Backend, listen: Listen
) -> None:
    """delete() sends pre_delete, then post_delete after the row is gone; pre_delete may veto."""
    seen: list[str] = []
    keep = await backend.users.add(backend.User(email="keep@x"))
    drop = await backend.users.add(backend.User(email="drop@x"))

    async def before(sender: Any, payload: PreDelete[Any]) -> None:
        if payload.instance.email == "keep@x":
            raise Veto
        seen.append(f"pre {payload.instance.email}")

    async def after(sender: Any, payload: PostDelete[Any]) -> None:
        seen.append(f"post {payload.instance.email} {await backend.users.get(payload.instance.id)}")

    listen(pre_delete, before, backend.User)
    listen(post_delete, after, backend.User)
    await backend.users.delete(drop)
    with pytest.raises(Veto):
        await backend.users.delete(keep)

    assert seen == ["pre drop@x", "post drop@x None"]
    assert [u.email for u in await backend.users.list()] == ["keep@x"]


async def test_deleting_an_entity_without_a_row_raises_not_found_and_sends_nothing(
    backend: Backend, listen: Listen
) -> None:
    """Deleting an entity that has no stored row raises NotFound and sends no pre_delete."""
    calls: list[Any] = []

    async def record(sender: Any, payload: PreDelete[Any]) -> None:
        calls.append(payload)

    listen(pre_delete, record, backend.User)
    with pytest.raises(NotFound):
        await backend.users.delete(backend.User(id=99, email="ghost@x"))
    assert calls == []


async def test_get_and_list_filter_and_paginate(backend: Backend) -> None:
    """get() of no row is None; list() filters, pages by limit/offset and refuses unknown fields."""
    assert await backend.users.get(1234) is None
    for i in range(5):
        await backend.users.add(backend.User(email=f"u{i}@x", name="even" if i % 2 == 0 else "odd"))

    assert [u.email for u in await backend.users.list(name="even")] == ["u0@x", "u2@x", "u4@x"]
    assert [u.email for u in await backend.users.list(limit=2, offset=1)] == ["u1@x", "u2@x"]
    with pytest.raises(ValueError, match="nickname"):
        await backend.users.list(nickname="x")


async def test_after_commit_receivers_run_once_after_commit_in_save_order(
    backend: Backend, listen: Listen
) -> None:
    """AFTER_COMMIT receivers run once each, after the transaction's body, in the order of saves."""
    log: list[str] = []

    async def after_commit(sender: Any, payload: PostSave[Any]) -> None:
        # Committed: a fresh read (another task, so another connection) sees the row.
        log.append(f"after commit {payload.instance.email}")

    listen(post_save, after_commit, backend.User, phase=Phase.AFTER_COMMIT)
    async with backend.transaction():
        await backend.users.add(backend.User(email="a@x"))
        await backend.users.add(backend.User(email="b@x"))
        log.append("body done")

    assert log == ["body done", "after commit a@x", "after commit b@x"]


async def test_rollback_writes_nothing_and_runs_no_after_commit_receiver(
    backend: Backend, listen: Listen
) -> None:
    """A rolled-back transaction keeps no row and runs AFTER_ROLLBACK receivers, no AFTER_COMMIT."""
    log: list[str] = []

    async def after_commit(sender: Any, payload: PostSave[Any]) -> None:
        log.append(f"commit {payload.instance.email}")

    async def after_rollback(sender: Any, payload: PostSave[Any]) -> None:
        log.append(f"rollback {payload.instance.email}")

    listen(post_save, after_commit, backend.User, phase=Phase.AFTER_COMMIT)
    listen(post_save, after_rollback, backend.User, phase=Phase.AFTER_ROLLBACK)
    with pytest.raises(Veto):
        async with backend.transaction():
            await backend.users.add(backend.User(email="a@x"))
            raise Veto

    assert log == ["rollback a@x"]
    assert await backend.users.list() == []


async def test_before_commit_receiver_vetoes_the_commit(backend: Backend, listen: Listen) -> None:
    """A BEFORE_COMMIT receiver that raises rolls back the whole transaction: no row stays."""
    log: list[str] = []

    async def before_commit(sender: Any, payload: PostSave[Any]) -> None:
        if payload.instance.email == "b@x":
            raise Veto

    async def after_rollback(sender: Any, payload: PostSave[Any]) -> None:
        log.append(f"rollback {payload.instance.email}")

    listen(post_save, before_commit, backend.User, phase=Phase.BEFORE_COMMIT)
    listen(post_save, after_rollback, backend.User, phase=Phase.AFTER_ROLLBACK)
    with pytest.raises(Veto):
        async with backend.transaction():
            await backend.users.add(backend.User(email="a@x"))
            await backend.users.add(backend.User(email="b@x"))

    assert await backend.users.list() == []
    assert log == ["rollback a@x", "rollback b@x"]


async def test_a_failing_after_commit_receiver_cannot_undo_the_commit(
    backend: Backend, listen: Listen
) -> None:
    """An AFTER_COMMIT receiver that raises leaves the row committed and the other receivers run."""
    ran: list[str] = []

    async def fails(sender: Any, payload: PostSave[Any]) -> None:
        raise Veto

    async def runs(sender: Any, payload: PostSave[Any]) -> None:
        ran.append(payload.instance.email)

    listen(post_save, fails, backend.User, phase=Phase.AFTER_COMMIT, priority=1)
    listen(post_save, runs, backend.User, phase=Phase.AFTER_COMMIT)
    # post_save's policy is "raise": the failure surfaces after the commit and after the
    # other after-commit receivers ran.
    with pytest.raises(Veto):
        async with backend.transaction():
            await backend.users.add(backend.User(email="a@x"))

    assert ran == ["a@x"]
    assert [u.email for u in await backend.users.list()] == ["a@x"]


async def test_outside_a_transaction_after_commit_runs_at_once(
    backend: Backend, listen: Listen
) -> None:
    """Without a transaction, an AFTER_COMMIT receiver runs before the save returns."""
    log: list[str] = []

    async def after_commit(sender: Any, payload: PostSave[Any]) -> None:
        log.append(payload.instance.email)

    listen(post_save, after_commit, backend.User, phase=Phase.AFTER_COMMIT)
    await backend.users.add(backend.User(email="a@x"))
    log.append("returned")
    assert log == ["a@x", "returned"]


async def test_rolling_back_a_savepoint_drops_only_its_writes_and_receivers(
    backend: Backend, listen: Listen
) -> None:
    """A nested transaction that rolls back drops its rows and receivers, not the outer ones."""
    log: list[str] = []

    async def after_commit(sender: Any, payload: PostSave[Any]) -> None:
        log.append(f"commit {payload.instance.email}")

    async def after_rollback(sender: Any, payload: PostSave[Any]) -> None:
        log.append(f"rollback {payload.instance.email}")

    listen(post_save, after_commit, backend.User, phase=Phase.AFTER_COMMIT)
    listen(post_save, after_rollback, backend.User, phase=Phase.AFTER_ROLLBACK)
    async with backend.transaction():
        await backend.users.add(backend.User(email="outer@x"))
        with pytest.raises(Veto):
            async with backend.transaction():
                await backend.users.add(backend.User(email="inner@x"))
                raise Veto
        async with backend.transaction():
            await backend.users.add(backend.User(email="kept@x"))

    assert log == ["rollback inner@x", "commit outer@x", "commit kept@x"]
    assert sorted(u.email for u in await backend.users.list()) == ["kept@x", "outer@x"]


async def test_a_unit_of_work_spans_repositories(backend: Backend, listen: Listen) -> None:
    """A receiver's write to another repository joins the transaction and commits or rolls back."""

    async def create_profile(sender: Any, payload: PostSave[Any]) -> None:
        if payload.created:
            await backend.profiles.add(backend.Profile(user_id=payload.instance.id))

    listen(post_save, create_profile, backend.User)
    with pytest.raises(Veto):
        async with backend.transaction():
            await backend.users.add(backend.User(email="a@x"))
            assert len(await backend.profiles.list()) == 1
            raise Veto
    assert await backend.users.list() == []
    assert await backend.profiles.list() == []

    async with backend.transaction():
        user = await backend.users.add(backend.User(email="b@x"))
    assert [p.user_id for p in await backend.profiles.list()] == [user.id]


async def test_an_after_commit_receiver_writes_in_a_transaction_of_its_own(
    backend: Backend, listen: Listen
) -> None:
    """An AFTER_COMMIT receiver may write: its rows appear only after the commit, in save order."""

    async def create_profile(sender: Any, payload: PostSave[Any]) -> None:
        if payload.created:
            await backend.profiles.add(backend.Profile(user_id=payload.instance.id))

    listen(post_save, create_profile, backend.User, phase=Phase.AFTER_COMMIT)
    async with backend.transaction():
        first = await backend.users.add(backend.User(email="a@x"))
        second = await backend.users.add(backend.User(email="b@x"))
        assert await backend.profiles.list() == []
    await backend.users.add(backend.User(email="c@x"))

    profiles = await backend.profiles.list()
    assert [p.user_id for p in profiles[:2]] == [first.id, second.id]
    assert len(profiles) == 3


async def test_concurrent_transactions_never_see_each_others_deferred_receivers(
    backend: Backend, listen: Listen
) -> None:
    """Overlapping transactions of two tasks each run only their own deferred receivers."""
    committed: list[str] = []
    rolled_back: list[str] = []

    async def after_commit(sender: Any, payload: PostSave[Any]) -> None:
        committed.append(payload.instance.email)

    async def after_rollback(sender: Any, payload: PostSave[Any]) -> None:
        rolled_back.append(payload.instance.email)

    listen(post_save, after_commit, backend.User, phase=Phase.AFTER_COMMIT)
    listen(post_save, after_rollback, backend.User, phase=Phase.AFTER_ROLLBACK)
    a_saved = anyio.Event()

    async def commits() -> None:
        async with backend.transaction():
            await backend.users.add(backend.User(email="a@x"))
            a_saved.set()
            # Stays open while the other task runs its own transaction.
            await anyio.sleep(0.05)

    async def rolls_back() -> None:
        await a_saved.wait()
        with pytest.raises(Veto):
            async with backend.transaction():
                await backend.users.add(backend.User(email="b@x"))
                raise Veto

    async with anyio.create_task_group() as group:
        group.start_soon(commits)
        group.start_soon(rolls_back)

    assert committed == ["a@x"]
    assert rolled_back == ["b@x"]
    assert [u.email for u in await backend.users.list()] == ["a@x"]


async def test_a_failed_write_inside_a_transaction_rolls_it_all_back(
    backend: Backend, listen: Listen
) -> None:
    """A write failing inside a transaction rolls it all back and raises TransactionAborted."""
    log: list[str] = []

    async def after_rollback(sender: Any, payload: PostSave[Any]) -> None:
        log.append(f"rollback {payload.instance.email}")

    listen(post_save, after_rollback, backend.User, phase=Phase.AFTER_ROLLBACK)
    await backend.users.add(backend.User(id=1000, email="taken@x"))
    log.clear()
    # The write joined the transaction; once it failed, committing the rest would keep
    # half of the block, so leaving it rolls everything back and says why.
    with pytest.raises(TransactionAborted) as aborted:
        async with backend.transaction():
            await backend.users.add(backend.User(email="a@x"))
            with pytest.raises(IntegrityError):
                await backend.users.add(backend.User(id=1000, email="again@x"))
    assert isinstance(aborted.value.__cause__, IntegrityError)
    assert [u.email for u in await backend.users.list()] == ["taken@x"]
    assert log == ["rollback a@x"]


async def test_a_failed_write_in_a_nested_transaction_rolls_back_only_that_savepoint(
    backend: Backend,
) -> None:
    """A write failing in a nested transaction rolls back that savepoint; the outer one commits."""
    await backend.users.add(backend.User(id=1000, email="taken@x"))
    async with backend.transaction():
        await backend.users.add(backend.User(email="a@x"))
        with pytest.raises(IntegrityError):
            async with backend.transaction():
                await backend.users.add(backend.User(id=1000, email="again@x"))
        await backend.users.add(backend.User(email="b@x"))
    assert sorted(u.email for u in await backend.users.list()) == ["a@x", "b@x", "taken@x"]


async def test_a_vetoed_write_inside_a_transaction_leaves_the_transaction_usable(
    backend: Backend, listen: Listen
) -> None:
    """A pre_save veto inside a transaction writes nothing, so the transaction still commits."""

    async def veto(sender: Any, payload: PreSave[Any]) -> None:
        if payload.instance.email == "no@x":
            raise Veto

    listen(pre_save, veto, backend.User)
    # As in Django: the veto came before any write, so the transaction goes on.
    async with backend.transaction():
        await backend.users.add(backend.User(email="a@x"))
        with pytest.raises(Veto):
            await backend.users.add(backend.User(email="no@x"))
    assert [u.email for u in await backend.users.list()] == ["a@x"]


async def test_an_empty_update_fields_writes_and_sends_nothing(
    backend: Backend, listen: Listen
) -> None:
    """save(update_fields=[]) changes no column and sends no pre_save, as in Django."""
    calls: list[Any] = []

    async def record(sender: Any, payload: PreSave[Any]) -> None:
        calls.append(payload)

    user = await backend.users.add(backend.User(email="a@x", name="A"))
    listen(pre_save, record, backend.User)
    user.name = "changed"
    await backend.users.save(user, update_fields=[])
    stored = await backend.users.get(user.id)
    assert stored is not None
    assert stored.name == "A"
    assert calls == []


async def test_a_missing_row_inside_a_transaction_does_not_abort_it(backend: Backend) -> None:
    """A delete raising NotFound inside a transaction leaves it able to commit its other writes."""
    async with backend.transaction():
        await backend.users.add(backend.User(email="a@x"))
        with pytest.raises(NotFound):
            await backend.users.delete(backend.User(id=99, email="ghost@x"))
    assert [u.email for u in await backend.users.list()] == ["a@x"]


async def test_saves_are_sent_even_with_no_receiver_so_capture_sees_them(
    backend: Backend,
) -> None:
    """post_save is sent with no receiver connected, so capture() records the saved instance."""
    with capture(post_save, sender=backend.User) as saved:
        user = await backend.users.add(backend.User(email="a@x"))
    saved.assert_sent_once(sender=backend.User, created=True)
    assert saved.payloads[0].instance is user


async def test_concurrent_receivers_may_write_in_the_same_transaction(
    backend: Backend, listen: Listen
) -> None:
    """Receivers run concurrently by a send inside a transaction can all write through it."""

    def profile_maker(n: int) -> Any:
        async def make(sender: Any, payload: PostSave[Any]) -> None:
            await backend.profiles.add(backend.Profile(user_id=payload.instance.id))
            await anyio.lowlevel.checkpoint()
            assert await backend.users.get(payload.instance.id) is not None

        make.__qualname__ = f"make_{n}"
        return make

    for n in range(5):
        listen(post_save, profile_maker(n), backend.User)
    async with backend.transaction():
        user = await backend.users.add(backend.User(email="a@x"))
        # The five receivers run as concurrent tasks, sharing the one transaction.
        await post_save.send(
            backend.User,
            PostSave(instance=user, created=False),
            mode=Concurrent(),
        )
    assert len(await backend.profiles.list(user_id=user.id)) == 10
