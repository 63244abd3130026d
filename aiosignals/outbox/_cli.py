"""
The outbox's commands: ``aiosignals relay`` and ``aiosignals outbox``.

``relay`` delivers rows until SIGINT or SIGTERM; ``outbox list|show|retry|purge`` looks
at, requeues and deletes them.

Argument parsing imports no optional extra (``aiosignals --help`` works without them); the
work goes through :class:`~aiosignals.outbox.OutboxRelay` and the outbox store.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import time
from types import SimpleNamespace
from typing import TYPE_CHECKING

from .._cli_args import (
    existing_database_url,
    hide_passwords,
    non_empty,
    non_negative_seconds,
    positive_int,
    positive_seconds,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._sqlalchemy import SQLAlchemyOutboxStore
    from ._store import OutboxRow

__all__ = ["outbox_command", "relay_command"]

logger = logging.getLogger("aiosignals.outbox")

# What `list` shows of a row's last error; `show ID` prints all of it.
_ERROR_WIDTH = 80


def _database_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        required=True,
        type=existing_database_url,
        metavar="URL",
        help="the SQLAlchemy database URL (a SQLite file must exist)",
    )


# -- aiosignals relay ----------------------------------------------------------------


def _relay_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``relay`` options to *parser*."""
    _database_argument(parser)
    parser.add_argument(
        "--db-name",
        type=non_empty,
        default="default",
        metavar="NAME",
        help="the database's name in the delivery keys handed to other systems"
        " (outbox:NAME:<row id>; default 'default'): each database whose relay feeds"
        " one queue or stream needs its own",
    )
    parser.add_argument(
        "--app",
        action="append",
        type=non_empty,
        default=[],
        metavar="MODULE",
        help="import MODULE first, so its durable receivers are connected (repeatable)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=100,
        help="rows claimed per round trip (default 100)",
    )
    parser.add_argument(
        "--concurrency",
        type=positive_int,
        default=16,
        help="ordering keys delivered side by side, each key's rows in order (default 16)",
    )
    parser.add_argument(
        "--max-attempts",
        type=positive_int,
        default=10,
        help="failures (or deaths of the relay delivering it) before a row is parked as dead"
        " (default 10)",
    )
    parser.add_argument(
        "--lease",
        type=positive_seconds,
        default=10.0,
        help="how long a claimed row stays this relay's, renewed while delivering;"
        " seconds (default 10)",
    )
    parser.add_argument(
        "--poll-interval",
        type=positive_seconds,
        default=0.5,
        help="wait between polls of an empty outbox, seconds (default 0.5)",
    )
    parser.add_argument(
        "--delivery-timeout",
        type=positive_seconds,
        default=60.0,
        metavar="SECONDS",
        help="a receiver call running longer fails and is retried (default 60)",
    )
    parser.add_argument(
        "--backoff",
        type=non_negative_seconds,
        default=1.0,
        help="first retry delay, doubled at each attempt, seconds (default 1)",
    )
    parser.add_argument(
        "--no-listen",
        dest="listen",
        action="store_false",
        help="poll only; do not LISTEN for commits on PostgreSQL (behind PgBouncer in"
        " transaction mode)",
    )


def _run_relay(args: argparse.Namespace) -> int:
    """Run the relay until SIGINT/SIGTERM; return the exit status."""
    import anyio

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for module in args.app:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            print(f"aiosignals relay: cannot import --app {module!r}: {exc}", file=sys.stderr)
            return 2
    _warn_without_receivers(args.app)
    return anyio.run(_serve, args)


def _warn_without_receivers(apps: list[str]) -> None:
    from .._signal import registry

    if any(c.durable for signal in list(registry.values()) for c in signal.connections):
        return
    if apps:
        missing = "--app " + " --app ".join(apps) + " connects no durable receiver"
    else:
        missing = "no --app given, so no durable receiver is connected"
    # Not an error: the rows wait (nothing is parked dead) for a relay that has them.
    logger.warning(
        "%s: this relay delivers nothing; pass --app MODULE for each module that connects"
        " durable receivers (rows are left pending meanwhile)",
        missing,
    )


async def _serve(args: argparse.Namespace) -> int:
    import anyio

    from ..repository.sqlalchemy import Database
    from ._relay import OutboxRelay

    async with Database(args.db, name=args.db_name) as db:
        await OutboxRelay.create_table(db)
        relay = OutboxRelay(
            db,
            batch_size=args.batch_size,
            concurrency=args.concurrency,
            max_attempts=args.max_attempts,
            lease=args.lease,
            poll_interval=args.poll_interval,
            delivery_timeout=args.delivery_timeout,
            backoff=args.backoff,
            listen=args.listen,
        )

        async def stop_on_signal(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                task_status.started()
                async for signum in signals:
                    logger.info("%s: finishing the row in hand", signal.Signals(signum).name)
                    relay.stop()
                    return

        async with anyio.create_task_group() as group:
            await group.start(stop_on_signal)
            logger.info("relay %s delivering from %r", relay.name, db)
            await relay.run()
            group.cancel_scope.cancel()
    logger.info("relay stopped")
    return 0


# -- aiosignals outbox ---------------------------------------------------------------


def _outbox_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``outbox`` actions and their options to *parser*."""
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=help_text, description=help_text)
        _database_argument(sub)
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


def _run_outbox(args: argparse.Namespace) -> int:
    """Run the action; return the exit status."""
    import anyio

    result: int = anyio.run(_outbox, args)
    return result


async def _outbox(args: argparse.Namespace) -> int:
    from ..repository.sqlalchemy import Database
    from ._sqlalchemy import SQLAlchemyOutboxStore
    from ._table import outbox

    async with Database(args.db) as db:
        store = SQLAlchemyOutboxStore(db)
        if not await store.has_table():
            print(
                f"aiosignals outbox: {hide_passwords(args.db)!r} has no outbox table"
                f" ({outbox.name}); it is created by db.create_all() or"
                " OutboxRelay.create_table()",
                file=sys.stderr,
            )
            return 2
        if args.action == "list":
            status = None if args.status == "all" else args.status
            _print_rows(await store.rows(status=status, ids=args.ids))
            return 0
        if args.action == "show":
            return await _show(store, args.row_id)
        return await _change_dead(store, args.action, args.ids)


async def _show(store: SQLAlchemyOutboxStore, row_id: int) -> int:
    found = await store.rows(ids=[row_id])
    if not found:
        print(f"aiosignals outbox: no row has id {row_id}", file=sys.stderr)
        return 1
    (row,) = found
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


async def _change_dead(store: SQLAlchemyOutboxStore, action: str, ids: list[int]) -> int:
    """Requeue (retry) or delete (purge) dead rows: all of them, or exactly those in *ids*."""
    from ._store import DEAD

    if ids:
        # Every named row must be there and dead, or nothing changes: a typo in one id must
        # not half-do the job.
        found = {row.id: row.status for row in await store.rows(ids=ids)}
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
    if action == "retry":
        print(f"requeued {await store.requeue(ids, time.time())} dead row(s)")
    else:
        print(f"purged {await store.purge(ids)} dead row(s)")
    return 0


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _cut(text: str, width: int) -> str:
    """Return *text* on one line, cut to *width* characters with an ellipsis if longer."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def _print_rows(rows: Sequence[OutboxRow]) -> None:
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


relay_command = SimpleNamespace(add_arguments=_relay_arguments, run=_run_relay)
"""``aiosignals relay``: the command's ``add_arguments`` and ``run``."""

outbox_command = SimpleNamespace(add_arguments=_outbox_arguments, run=_run_outbox)
"""``aiosignals outbox``: the command's ``add_arguments`` and ``run``."""
