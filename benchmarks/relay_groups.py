"""
What writing outcomes in groups costs the relay's drain, against once per batch.

Run ``python benchmarks/relay_groups.py`` (``--postgres`` for a throwaway database on
``AIOSIGNALS_TEST_POSTGRES_URL``'s server; an SQLite file otherwise). One relay drains N
outbox rows (10,000) for one durable no-op receiver, as ``benchmarks/outbox.py`` does, at
batch sizes 100 and 500, in two ways, in interleaved rounds in one process (the order
alternating), so that a busy machine slows both alike:

- **groups** (the relay as it is): outcomes are written, and the next rows marked as
  started, a group at a time (up to ``MAX_GROUP_ROWS``, 256), so a killed relay redoes at
  most a group;
- **groups, each a transaction** (before #15): as above, but each group written as a
  transaction (BEGIN, DELETE, UPDATE, COMMIT: four round trips) instead of one statement;
- **once per batch** (as before #11): the group is made as large as the batch, so the
  batch's outcomes are written once, at its end.

The last two patch internals of the relay (the group cap, the relay's first group size,
the store's one-statement write): they are measurements, not options.

The figure is the median events/s over the rounds, with every round's figure.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time

from _common import describe, load_average, machine, versions
from outbox import (
    PACKAGES,
    Base,
    Throughput,
    after_drain,
    clean_up,
    database,
    fill,
    job_receivers,
    relay_loop,
    restore,
    snapshot,
)

from aiosignals.outbox import OutboxRelay, _progress
from aiosignals.outbox._sqlalchemy import SQLAlchemyOutboxStore
from aiosignals.outbox._store import Outcomes
from aiosignals.repository.sqlalchemy import Database

WAYS = ("groups", "groups, each a transaction", "once per batch")
ONE_STATEMENT = SQLAlchemyOutboxStore._finish_in_one_statement  # pyright: ignore[reportPrivateUsage]


async def in_a_transaction(
    store: SQLAlchemyOutboxStore, relay: str, done: list[int], mark: list[int]
) -> bool:
    outcomes = Outcomes()
    outcomes.done.extend(done)
    return await store._finish_in_transaction(relay, outcomes, mark)  # pyright: ignore[reportPrivateUsage]


async def drain(db: Database, batch_size: int, way: str, budget: float) -> float:
    groups = way != "once per batch"
    saved = _progress.MAX_GROUP_ROWS
    _progress.MAX_GROUP_ROWS = saved if groups else 1_000_000
    write = in_a_transaction if way == "groups, each a transaction" else ONE_STATEMENT
    SQLAlchemyOutboxStore._finish_in_one_statement = write  # type: ignore[method-assign,assignment]  # pyright: ignore[reportPrivateUsage]
    try:
        with job_receivers(1):
            total = await restore(db, 1)
            relay = OutboxRelay(db, batch_size=batch_size)
            if not groups:
                relay._group_rows = 1_000_000  # pyright: ignore[reportPrivateUsage]
            gc.collect()
            start = time.perf_counter()
            done, last = await relay_loop(relay, start + budget, others=False)
    finally:
        _progress.MAX_GROUP_ROWS = saved
        SQLAlchemyOutboxStore._finish_in_one_statement = ONE_STATEMENT  # type: ignore[method-assign]  # pyright: ignore[reportPrivateUsage]
    await after_drain(db, Throughput(way, batch_size, done, total, last - start))
    return done / (last - start)


async def main_async(args: argparse.Namespace) -> None:
    print(f"Command: `python {' '.join(sys.argv)}`")
    print(f"Machine: {machine()}; {load_average()} at start")
    print(f"Versions: {versions(PACKAGES)}")
    async with database(args.postgres) as url:
        db = Database(url)
        try:
            await db.create_all(Base.metadata)
            print(f"Database: {await describe(db)}")
            await fill(db, args.n, 1)
            await snapshot(db, 1)
            found: dict[tuple[str, int], list[float]] = {}
            for round_no in range(args.rounds):
                shift = round_no % len(WAYS)
                for way in WAYS[shift:] + WAYS[:shift]:
                    for batch_size in (100, 500):
                        rate = await drain(db, batch_size, way, args.budget)
                        found.setdefault((way, batch_size), []).append(rate)
            print()
            print(f"{args.n:,} rows, {args.rounds} interleaved rounds; median events/s")
            print()
            print("| outcomes written | batch_size | events/s | rounds |")
            print("|---|---:|---:|---|")
            for (way, batch_size), rates in sorted(found.items(), key=lambda kv: kv[0][::-1]):
                each = ", ".join(f"{rate:,.0f}" for rate in rates)
                print(f"| {way} | {batch_size} | **{statistics.median(rates):,.0f}** | {each} |")
        finally:
            await clean_up(db)
    print()
    print(f"{load_average()} at end")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL database")
    parser.add_argument("--n", type=int, default=10_000, help="outbox rows per drain")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds")
    parser.add_argument("--budget", type=float, default=20.0, help="seconds a drain may take")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
