"""``aiosignals outbox list|show|retry|purge`` on real outbox rows (SQLite and PostgreSQL)."""

from __future__ import annotations

import anyio
import pytest

from aiosignals._cli import main as cli
from aiosignals.outbox import OutboxRelay
from aiosignals.repository.sqlalchemy import Database, SQLAlchemyRepository
from tests.outbox import app
from tests.outbox.app import Order

pytestmark = pytest.mark.anyio

# Long enough that `list` must cut its error; the end is only in the full error.
LONG_ITEM = "poison-" + "x" * 120 + "-END"


async def dead_row(db: Database, item: str = "poison") -> None:
    """Store an order whose durable receiver always fails, and let one relay pass park it."""
    await SQLAlchemyRepository(Order, db).add(Order(item=item))
    await OutboxRelay(db, max_attempts=1, backoff=0.0).run_once()


async def run(*argv: str) -> int:
    # main() runs its own event loop: call it from a worker thread, as a shell would.
    status: int = await anyio.to_thread.run_sync(cli, list(argv))
    return status


async def test_list_cuts_a_long_error_with_an_ellipsis_and_show_prints_it_whole(
    db: Database, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`list` shows the start of a long error ending in an ellipsis; `show ID` the whole row."""
    app.BROKEN.add(LONG_ITEM)
    await dead_row(db, LONG_ITEM)

    assert await run("outbox", "list", "--db", db_url) == 0
    listing = capsys.readouterr().out
    line = next(line for line in listing.splitlines() if "cannot handle" in line)
    assert line.endswith("…")
    assert "-END" not in listing

    assert await run("outbox", "show", "--db", db_url, "1") == 0
    shown = capsys.readouterr().out
    assert f"RuntimeError: cannot handle {LONG_ITEM}" in shown
    for field in ("id", "status", "attempts", "receiver", "signal", "sender", "payload"):
        assert f"\n{field}:" in f"\n{shown}"
    assert "dead" in shown
    assert "tests.outbox.record_order" in shown


@pytest.mark.parametrize("action", [["show"], ["retry", "--id"], ["purge", "--id"]])
async def test_a_row_id_that_does_not_exist_exits_1_and_changes_nothing(
    db: Database, db_url: str, action: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Naming a row that does not exist says so, exits 1, and leaves the other rows alone."""
    await dead_row(db)
    first, *rest = action
    assert await run("outbox", first, "--db", db_url, *rest, "99") == 1
    assert "no row has id 99" in capsys.readouterr().err

    assert await run("outbox", "list", "--db", db_url) == 0
    assert "0 pending, 1 dead" in capsys.readouterr().out


async def test_retry_of_a_row_that_is_not_dead_says_so(
    db: Database, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`retry --id` of a pending row exits 1 saying only dead rows are requeued."""
    await SQLAlchemyRepository(Order, db).add(Order(item="fine"))
    assert await run("outbox", "retry", "--db", db_url, "--id", "1") == 1
    assert "row 1 is pending, not dead" in capsys.readouterr().err


async def test_retry_of_an_existing_dead_row_by_id_requeues_it(
    db: Database, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`retry --id N` of a dead row requeues exactly that row."""
    await dead_row(db)
    assert await run("outbox", "retry", "--db", db_url, "--id", "1") == 0
    assert "requeued 1 dead row(s)" in capsys.readouterr().out
