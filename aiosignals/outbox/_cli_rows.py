"""``aiosignals outbox list|show|retry|purge``: look at, requeue and delete outbox rows."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any

from .._cli_args import existing_database_url, hide_passwords, positive_int

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["add_arguments", "run"]

# What `list` shows of a row's last error; `show ID` prints all of it.
_ERROR_WIDTH = 80


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``outbox`` actions and their options to *parser*."""
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "--db",
            required=True,
            type=existing_database_url,
            metavar="URL",
            help="the SQLAlchemy database URL (a SQLite file must exist)",
        )
        return sub

    def ids(sub: argparse.ArgumentParser, what: str) -> None:
        sub.add_argument(
            "--id",
            type=positive_int,
            action="append",
            default=[],
            dest="ids",
            metavar="ROW_ID",
            help=f"{what} this row only (repeat for several)",
        )

    listing = action("list", "list pending and dead rows, with the start of their last error")
    ids(listing, "list")
    listing.add_argument(
        "--status",
        choices=["pending", "dead", "all"],
        default="all",
        help="which rows to list (default: all)",
    )
    show = action("show", "print one row in full, with its whole last error")
    show.add_argument("row_id", type=positive_int, metavar="ID", help="the row's id")
    ids(action("retry", "requeue dead rows, with their attempts reset"), "requeue")
    ids(action("purge", "delete dead rows"), "delete")


def run(args: argparse.Namespace) -> int:
    """Run the action; return the exit status."""
    import anyio

    result: int = anyio.run(_run, args)
    return result


async def _run(args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    from ..repository.sqlalchemy import Database
    from ._table import outbox

    async with Database(args.db) as db, db.engine.begin() as connection:
        has_table = await connection.run_sync(lambda sync: sa.inspect(sync).has_table(outbox.name))
        if not has_table:
            print(
                f"aiosignals outbox: {hide_passwords(args.db)!r} has no outbox table"
                f" ({outbox.name}); it is created by db.create_all() or"
                " OutboxRelay.create_table()",
                file=sys.stderr,
            )
            return 2
        if args.action == "list":
            return await _list(connection, args.status, args.ids)
        if args.action == "show":
            return await _show(connection, args.row_id)
        return await _change_dead(connection, args.action, args.ids)


async def _list(connection: AsyncConnection, status: str, ids: list[int]) -> int:
    import sqlalchemy as sa

    from ._table import outbox

    only = outbox.c.id.in_(ids) if ids else sa.true()
    which = sa.true() if status == "all" else outbox.c.status == status
    rows = (await connection.execute(sa.select(outbox).where(which, only).order_by("id"))).all()
    _print_rows(rows)
    return 0


async def _show(connection: AsyncConnection, row_id: int) -> int:
    import sqlalchemy as sa

    from ._table import outbox

    row = (await connection.execute(sa.select(outbox).where(outbox.c.id == row_id))).first()
    if row is None:
        print(f"aiosignals outbox: no row has id {row_id}", file=sys.stderr)
        return 1
    now = time.time()
    fields: dict[str, object] = {
        "id": row.id,
        "status": row.status,
        "attempts": row.attempts,
        "receiver": row.dispatch_uid,
        "signal": row.signal,
        "sender": row.sender,
        "created": _when(row.created_at),
        "due": f"{_when(row.available_at)} (in {max(0.0, row.available_at - now):.0f}s)",
        "locked by": f"{row.locked_by} until {_when(row.locked_until)}"
        if row.locked_by and row.locked_until
        else "-",
        "payload": row.payload,
    }
    for name, value in fields.items():
        print(f"{name}: {value}")
    print("last error:")
    print(row.last_error or "-")
    return 0


async def _change_dead(connection: AsyncConnection, action: str, ids: list[int]) -> int:
    """Requeue (retry) or delete (purge) dead rows: all of them, or exactly those in *ids*."""
    import sqlalchemy as sa

    from ._table import DEAD, PENDING, outbox

    if ids:
        # Every named row must be there and dead, or nothing changes: a typo in one id must
        # not half-do the job.
        query = sa.select(outbox.c.id, outbox.c.status).where(outbox.c.id.in_(ids))
        found = {row.id: row.status for row in await connection.execute(query)}
        problems = [
            f"no row has id {row_id}"
            if row_id not in found
            else f"row {row_id} is {found[row_id]}, not dead"
            for row_id in dict.fromkeys(ids)
            if found.get(row_id) != DEAD
        ]
        if problems:
            for problem in problems:
                print(f"aiosignals outbox: {problem}", file=sys.stderr)
            print(f"aiosignals outbox: nothing done ({action} acts on dead rows)", file=sys.stderr)
            return 1
    dead = sa.and_(outbox.c.status == DEAD, outbox.c.id.in_(ids) if ids else sa.true())
    if action == "retry":
        result = await connection.execute(
            outbox.update()
            .where(dead)
            .values(
                status=PENDING, attempts=0, failures=0, available_at=time.time(), locked_until=None
            )
        )
        print(f"requeued {result.rowcount} dead row(s)")
    else:
        result = await connection.execute(outbox.delete().where(dead))
        print(f"purged {result.rowcount} dead row(s)")
    return 0


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _cut(text: str, width: int) -> str:
    """Return *text* on one line, cut to *width* characters with an ellipsis if longer."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def _print_rows(rows: Any) -> None:
    header = ("id", "status", "attempts", "receiver", "signal", "due in", "last error")
    now = time.time()
    table = [
        (
            str(row.id),
            row.status,
            str(row.attempts),
            row.dispatch_uid,
            row.signal,
            f"{max(0.0, row.available_at - now):.0f}s" if row.status == "pending" else "-",
            _cut(row.last_error or "", _ERROR_WIDTH),
        )
        for row in rows
    ]
    widths = [max(len(cell) for cell in column) for column in zip(header, *table, strict=False)]
    for line in (header, *table):
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )
    pending = sum(1 for row in rows if row.status == "pending")
    print(f"\n{pending} pending, {len(table) - pending} dead")
    if any(len(" ".join((row.last_error or "").split())) > _ERROR_WIDTH for row in rows):
        print("(errors cut at … are in full in `aiosignals outbox show ID`)")
