"""``aiosignals relay``: deliver outbox rows until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys

from .._cli_args import (
    existing_database_url,
    non_empty,
    non_negative_seconds,
    positive_int,
    positive_seconds,
)

__all__ = ["add_arguments", "run"]

logger = logging.getLogger("aiosignals.outbox")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``relay`` options to *parser*."""
    parser.add_argument(
        "--db",
        required=True,
        type=existing_database_url,
        metavar="URL",
        help="the SQLAlchemy database URL (a SQLite file must exist)",
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


def run(args: argparse.Namespace) -> int:
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

    async with Database(args.db) as db:
        await OutboxRelay.create_table(db)
        relay = OutboxRelay(
            db,
            batch_size=args.batch_size,
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
