"""``aiosignals outbox list|retry|purge``: look at and requeue outbox rows."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``outbox`` options to *parser*."""
    parser.add_argument(
        "action",
        choices=["list", "retry", "purge"],
        help="list rows; retry: requeue dead rows; purge: delete dead rows",
    )
    parser.add_argument("--db", required=True, metavar="URL", help="the SQLAlchemy database URL")
    parser.add_argument(
        "--id",
        type=int,
        action="append",
        default=[],
        dest="ids",
        metavar="ROW_ID",
        help="act on this row only (repeat for several)",
    )
    parser.add_argument(
        "--status",
        choices=["pending", "dead", "all"],
        default="all",
        help="which rows `list` shows (default: all)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the action; return the exit status."""
    import anyio

    result: int = anyio.run(_run, args)
    return result


async def _run(args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    from ..repository.sqlalchemy import Database
    from ._table import DEAD, PENDING, outbox

    if _missing_sqlite_file(args.db):
        # Connecting would create an empty database: a typo would look like an empty outbox.
        print(f"aiosignals outbox: no SQLite database at {args.db!r}", file=sys.stderr)
        return 2
    async with Database(args.db) as db, db.engine.begin() as connection:
        has_table = await connection.run_sync(lambda sync: sa.inspect(sync).has_table(outbox.name))
        if not has_table:
            print(
                f"aiosignals outbox: {args.db!r} has no outbox table ({outbox.name});"
                " it is created by db.create_all() or OutboxRelay.create_table()",
                file=sys.stderr,
            )
            return 2
        only = outbox.c.id.in_(args.ids) if args.ids else sa.true()
        if args.action == "list":
            status = sa.true() if args.status == "all" else outbox.c.status == args.status
            rows = (
                await connection.execute(sa.select(outbox).where(status, only).order_by("id"))
            ).all()
            _print_rows(rows)
            return 0
        dead = sa.and_(outbox.c.status == DEAD, only)
        if args.action == "retry":
            result = await connection.execute(
                outbox.update()
                .where(dead)
                .values(
                    status=PENDING,
                    attempts=0,
                    failures=0,
                    available_at=time.time(),
                    locked_until=None,
                )
            )
            print(f"requeued {result.rowcount} dead row(s)")
        else:
            result = await connection.execute(outbox.delete().where(dead))
            print(f"purged {result.rowcount} dead row(s)")
        return 0


def _missing_sqlite_file(url: str) -> bool:
    head, _, path = url.partition(":///")
    if not head.startswith("sqlite") or not path or path.startswith(":memory:"):
        return False
    return not Path(path.split("?")[0]).exists()


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
            (row.last_error or "").replace("\n", " ")[:80],
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
