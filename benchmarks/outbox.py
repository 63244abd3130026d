"""
Throughput of the outbox relay, and what a durable receiver adds to a save.

Run ``python benchmarks/outbox.py`` (an SQLite file in a temporary directory), with
``--quick`` for a shorter run, or ``--postgres`` for a throwaway database on the server of
``AIOSIGNALS_TEST_POSTGRES_URL`` (``source /tmp/svc.env``), dropped afterwards.
``--profile`` also prints where one drain of the relay spends its time (per step of
``run_once``, per SQL statement, and cProfile).

1. Relay throughput. The outbox is filled with N rows (10,000; 2,000 with ``--quick``) by
   sending a named signal with one durable no-op receiver, 100 sends per transaction; the
   rows are copied aside and put back before each drain, so every drain starts from the
   same rows. Then ``OutboxRelay(db, batch_size=B).run_once()`` is called until the outbox
   is empty, for B in 1, 100, 500: throughput is the rows finished divided by the time to
   the last one. Each drain is time-boxed (``--budget``, 20 s; 10 s with ``--quick``).
   On PostgreSQL the outbox is analyzed after the rows are put back; one more drain runs
   with the statistics of the empty outbox (analyzed before), as autovacuum leaves an
   outbox that is usually empty when a backlog builds up. Two relays then drain N rows
   written for 4 durable receivers (N/4 sends): as two tasks of one process, and as two
   processes (started and connected before the clock starts). The relay keeps each
   receiver's rows in order, so two relays can only ever share work across receivers.
2. Save cost. ``SQLAlchemyRepository.add()`` of a new entity, each in a transaction of its
   own, with no receivers, with one durable ``post_save`` receiver (one outbox row per
   save) and with one ``AFTER_COMMIT`` ``post_save`` receiver: interleaved rounds (the
   starting case rotating), median µs per save; the outbox is emptied between batches.

The issue's goal: at least 5,000 events/s on PostgreSQL with batching.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import os
import pstats
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from _common import describe, load_average, machine, throwaway_postgres, versions
from sqlalchemy import event
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from aiosignals import Event, Phase, Signal
from aiosignals.models import PostSave, post_save
from aiosignals.outbox import OutboxRelay
from aiosignals.outbox._table import outbox
from aiosignals.repository.sqlalchemy import Database, SQLAlchemyRepository

PACKAGES = ["aiosignals", "sqlalchemy", "aiosqlite", "asyncpg", "anyio", "pydantic"]
"""The distributions whose versions the report names."""

GOAL = 5000.0  # events/s on PostgreSQL with batching (the issue)
BATCH_SIZES = (1, 100, 500)
SENDS_PER_TRANSACTION = 100


# Unique per run: the table names of this run's entities and outbox snapshots.
RUN = uuid.uuid4().hex[:8]


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = f"bench_items_{RUN}"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(100))


class Job(Event):
    n: int


job = Signal(Job, name="benchmarks.outbox.job")
UIDS = [f"benchmarks.outbox.noop.{i}" for i in range(4)]


def make_noop() -> Callable[[str, Job], Awaitable[None]]:
    async def noop(sender: str, payload: Job) -> None:
        return None

    return noop


# One function per receiver: connecting one function twice would connect it once.
NOOPS = {uid: make_noop() for uid in UIDS}


async def noop_saved(sender: type[Item], payload: PostSave[Item]) -> None:
    return None


@contextmanager
def job_receivers(count: int) -> Iterator[None]:
    """Connect *count* durable no-op receivers to ``job`` (distinct dispatch_uids)."""
    for uid in UIDS[:count]:
        job.connect(NOOPS[uid], durable=True, dispatch_uid=uid)
    try:
        yield
    finally:
        for uid in UIDS[:count]:
            job.disconnect(dispatch_uid=uid)


async def outbox_count(db: Database) -> int:
    async with db.engine.connect() as connection:
        return int(await connection.scalar(sa.select(sa.func.count()).select_from(outbox)) or 0)


async def clear_outbox(db: Database) -> None:
    async with db.engine.begin() as connection:
        await connection.execute(outbox.delete())


async def fill(db: Database, rows: int, receivers: int) -> float:
    """
    Write *rows* outbox rows by sending ``job``; return the rows written per second.

    Connects *receivers* durable receivers for the sends: each send writes that many rows.
    """
    sends = rows // receivers
    with job_receivers(receivers):
        start = time.perf_counter()
        n = 0
        while n < sends:
            async with db.transaction():
                for _ in range(min(SENDS_PER_TRANSACTION, sends - n)):
                    await job.send("bench", Job(n=n))
                    n += 1
        elapsed = time.perf_counter() - start
    found = await outbox_count(db)
    if found != sends * receivers:
        raise SystemExit(f"expected {sends * receivers} outbox rows, found {found}")
    return found / elapsed


def snapshot_name(receivers: int) -> str:
    return f"bench_outbox_{receivers}_{RUN}"


async def snapshot(db: Database, receivers: int) -> None:
    """Keep a copy of the outbox's rows, to put back before each drain; empty the outbox."""
    async with db.engine.begin() as connection:
        await connection.execute(
            sa.text(f"CREATE TABLE {snapshot_name(receivers)} AS SELECT * FROM {outbox.name}")
        )
        await connection.execute(outbox.delete())


async def analyze(db: Database) -> None:
    async with db.engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(sa.text(f"ANALYZE {outbox.name}"))


async def restore(db: Database, receivers: int, *, fresh_statistics: bool = True) -> int:
    """
    Put the snapshot's rows back into the (empty) outbox; return how many.

    On PostgreSQL the outbox is then analyzed, as autovacuum would do sooner or later;
    without *fresh_statistics* it is analyzed before, while empty, as autovacuum leaves
    an outbox that is usually empty when a backlog builds up.
    """
    if not fresh_statistics and not db.is_sqlite:
        await analyze(db)
    async with db.engine.begin() as connection:
        if await connection.scalar(sa.select(sa.func.count()).select_from(outbox)):
            raise SystemExit("the outbox is not empty before a drain")
        await connection.execute(
            sa.text(f"INSERT INTO {outbox.name} SELECT * FROM {snapshot_name(receivers)}")
        )
    if fresh_statistics and not db.is_sqlite:
        await analyze(db)
    return await outbox_count(db)


async def clean_up(db: Database) -> None:
    """Drop this run's tables and snapshots; close the engine."""
    async with db.engine.begin() as connection:
        await connection.run_sync(Base.metadata.drop_all)
    await drop_snapshots(db)
    await db.dispose()


async def drop_snapshots(db: Database) -> None:
    async with db.engine.begin() as connection:
        for receivers in (1, 4):
            await connection.execute(sa.text(f"DROP TABLE IF EXISTS {snapshot_name(receivers)}"))


async def relay_loop(relay: OutboxRelay, deadline: float, others: bool) -> tuple[int, float]:
    """
    Call ``run_once`` until the outbox is empty or *deadline* (perf_counter) has passed.

    With *others* (other relays share the outbox), an empty claim may only mean that the
    others hold the rest, leased: the loop ends when the table is empty, and polls every
    millisecond until then. Returns the rows finished and the perf_counter of the last.
    """
    finished = 0
    last = time.perf_counter()
    while time.perf_counter() < deadline:
        done = await relay.run_once()
        if done:
            finished += done
            last = time.perf_counter()
        elif not others or relay.db is None or not await outbox_count(relay.db):
            break
        else:
            await asyncio.sleep(0.001)
    return finished, last


# -- part 1: relay throughput ---------------------------------------------------------


@dataclass
class Throughput:
    label: str
    batch_size: int
    rows: int  # rows finished in the time
    total: int  # rows in the outbox at the start
    seconds: float

    @property
    def rate(self) -> float:
        return self.rows / self.seconds


async def after_drain(db: Database, result: Throughput) -> Throughput:
    """Check the count; empty what a time-boxed drain left."""
    left = await outbox_count(db)
    if left != result.total - result.rows:
        raise SystemExit(f"{result.label}: {result.rows} finished but {left} rows left")
    await clear_outbox(db)
    return result


async def one_relay(
    db: Database, batch_size: int, budget: float, *, fresh_statistics: bool = True
) -> Throughput:
    with job_receivers(1):
        total = await restore(db, 1, fresh_statistics=fresh_statistics)
        relay = OutboxRelay(db, batch_size=batch_size)
        gc.collect()
        start = time.perf_counter()
        done, last = await relay_loop(relay, start + budget, others=False)
    label = f"1 relay, batch_size={batch_size}"
    if not fresh_statistics:
        label += ", planner statistics of the empty outbox"
    return await after_drain(db, Throughput(label, batch_size, done, total, last - start))


async def two_relays_in_process(db: Database, batch_size: int, budget: float) -> Throughput:
    with job_receivers(4):
        total = await restore(db, 4)
        relays = [OutboxRelay(db, batch_size=batch_size, name=f"bench-{i}") for i in (1, 2)]
        gc.collect()
        start = time.perf_counter()
        results = await asyncio.gather(
            *(relay_loop(relay, start + budget, others=True) for relay in relays)
        )
    split = "/".join(str(done) for done, _ in results)
    label = f"2 relays (tasks of 1 process), batch_size={batch_size}, 4 receivers; split {split}"
    done = sum(done for done, _ in results)
    seconds = max(last for _, last in results) - start
    return await after_drain(db, Throughput(label, batch_size, done, total, seconds))


async def two_relays_in_processes(
    db: Database, url: str, batch_size: int, budget: float
) -> Throughput:
    total = await restore(db, 4)
    # The URL (with its password) goes by the environment, not the command line.
    command = [sys.executable, __file__, "--relay-worker", f"{batch_size},{budget}"]
    workers = [
        await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=Path(__file__).parent.parent,
            env={**os.environ, "AIOSIGNALS_BENCH_RELAY_URL": url},
        )
        for _ in range(2)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            line = await worker.stdout.readline()
            if line.strip() != b"ready":
                raise SystemExit(f"relay worker did not start: {line!r}")
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write(b"go\n")
            await worker.stdin.drain()
        outputs = [(await worker.communicate())[0].split() for worker in workers]
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
    # Each worker reports its rows and the seconds from its "go" to its last finished row.
    split = "/".join(out[0].decode() for out in outputs)
    label = f"2 relays (2 processes), batch_size={batch_size}, 4 receivers; split {split}"
    done = sum(int(out[0]) for out in outputs)
    seconds = max(float(out[1]) for out in outputs)
    return await after_drain(db, Throughput(label, batch_size, done, total, seconds))


async def relay_worker(url: str, batch_size: int, budget: float) -> None:
    """A relay process for :func:`two_relays_in_processes`."""
    async with Database(url) as db:
        async with db.engine.connect() as connection:
            await connection.scalar(sa.text("select 1"))  # a pooled connection, before the clock
        with job_receivers(4):
            relay = OutboxRelay(db, batch_size=batch_size)
            print("ready", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            start = time.perf_counter()
            done, last = await relay_loop(relay, start + budget, others=True)
    print(done, f"{last - start:.6f}", flush=True)


# -- part 2: save cost ----------------------------------------------------------------


@dataclass
class SaveCase:
    key: str
    label: str
    connect: Callable[[], None]
    disconnect: Callable[[], None]
    samples: list[float] = field(default_factory=list)  # µs per save, one per round

    @property
    def median_us(self) -> float:
        return statistics.median(self.samples)


def save_cases() -> list[SaveCase]:
    def nothing() -> None:
        return None

    def durable() -> None:
        post_save.connect(
            noop_saved, sender=Item, durable=True, dispatch_uid="benchmarks.outbox.saved"
        )

    def after_commit() -> None:
        post_save.connect(noop_saved, sender=Item, phase=Phase.AFTER_COMMIT)

    def disconnect() -> None:
        post_save.disconnect(noop_saved, sender=Item)

    return [
        SaveCase("none", "repo.add, no receivers", nothing, nothing),
        SaveCase("durable", "repo.add, one durable post_save receiver", durable, disconnect),
        SaveCase(
            "after", "repo.add, one AFTER_COMMIT post_save receiver", after_commit, disconnect
        ),
    ]


async def save_batch(repo: SQLAlchemyRepository[Item], case: SaveCase, n: int) -> float:
    case.connect()
    try:
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter_ns()
            for i in range(n):
                await repo.add(Item(name=f"item {i}"))
            elapsed = time.perf_counter_ns() - start
        finally:
            gc.enable()
    finally:
        case.disconnect()
    await clear_outbox(repo.db)
    return elapsed / n / 1000


async def save_costs(
    db: Database, n: int, rounds: int, budget: float
) -> tuple[list[SaveCase], int]:
    repo = SQLAlchemyRepository(Item, db)
    cases = save_cases()
    for case in cases:
        await save_batch(repo, case, max(10, n // 10))  # warm-up
    started = time.perf_counter()
    for round_no in range(rounds):
        shift = round_no % len(cases)
        for case in cases[shift:] + cases[:shift]:
            case.samples.append(await save_batch(repo, case, n))
        if round_no >= 2 and time.perf_counter() - started > budget:
            return cases, round_no + 1
    return cases, rounds


# -- profile --------------------------------------------------------------------------


class TimedRelay(OutboxRelay):
    """An OutboxRelay that adds up the time of its steps: claims, deliveries, writes."""

    def __init__(self, db: Database, **options: Any) -> None:
        super().__init__(db, **options)
        self.times: dict[str, float] = defaultdict(float)
        store = self.store
        claim, finish = store.claim, store.finish

        async def timed_claim(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await claim(*args, **kwargs)
            finally:
                self.times["claim (1 transaction)"] += time.perf_counter() - start

        async def timed_finish(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await finish(*args, **kwargs)
            finally:
                self.times["write outcomes (1 transaction each)"] += time.perf_counter() - start

        store.claim = timed_claim  # type: ignore[method-assign]
        store.finish = timed_finish  # type: ignore[method-assign]

    async def _deliver_all(self, rows: list[Any], progress: Any) -> None:
        start = time.perf_counter()
        try:
            await super()._deliver_all(rows, progress)
        finally:
            self.times["deliver (receivers called, outcomes written)"] += (
                time.perf_counter() - start
            )


@contextmanager
def statement_timer(db: Database) -> Iterator[dict[str, list[float]]]:
    """Time each SQL statement from cursor execute to its return, by the statement's start."""
    found: dict[str, list[float]] = defaultdict(list)
    engine = db.engine.sync_engine

    def before(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        conn.info["bench_started"] = time.perf_counter()

    def after(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        words = " ".join(statement.split())
        shape = words[:70] + ("..." if len(words) > 70 else "")
        found[shape].append(time.perf_counter() - conn.info.pop("bench_started"))

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        yield found
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)


async def profile_relay(db: Database, batch_size: int, budget: float, top: int) -> None:
    print(f"## 3. Where one drain's time goes (1 relay, batch_size={batch_size})")
    print()
    with job_receivers(1):
        total = await restore(db, 1)
        relay = TimedRelay(db, batch_size=batch_size)
        with statement_timer(db) as statements:
            start = time.perf_counter()
            done, last = await relay_loop(relay, start + budget, others=False)
            elapsed = time.perf_counter() - start
    await after_drain(db, Throughput("profile", batch_size, done, total, last - start))
    print(
        f"{done} of {total} rows in {elapsed * 1000:.0f} ms ({done / elapsed:,.0f} events/s,"
        f" {elapsed / done * 1e6:.1f} µs per row), timed per step and per SQL statement"
        " (the timing adds a little)."
    )
    print()
    print("| step of run_once | ms | share | µs per row |")
    print("|---|---:|---:|---:|")
    for step, seconds in relay.times.items():
        print(
            f"| {step} | {seconds * 1000:.0f} | {seconds / elapsed:.0%} |"
            f" {seconds / done * 1e6:.1f} |"
        )
    print()
    print("| SQL statement (cursor execute to result) | count | ms | share | ms each |")
    print("|---|---:|---:|---:|---:|")
    for shape, times in sorted(statements.items(), key=lambda kv: -sum(kv[1])):
        spent = sum(times)
        print(
            f"| `{shape}` | {len(times)} | {spent * 1000:.0f} | {spent / elapsed:.0%} |"
            f" {spent / len(times) * 1000:.2f} |"
        )
    in_sql = sum(sum(times) for times in statements.values())
    print()
    print(
        f"In SQL statements: {in_sql * 1000:.0f} ms ({in_sql / elapsed:.0%}); the rest is"
        " the receivers' calls, SQLAlchemy (compiling, results), connection checkout and"
        " the event loop."
    )
    print()
    with job_receivers(1):
        total = await restore(db, 1)
        plain = OutboxRelay(db, batch_size=batch_size)
        profiler = cProfile.Profile()
        start = time.perf_counter()
        profiler.enable()
        done, last = await relay_loop(plain, start + budget, others=False)
        profiler.disable()
    await after_drain(db, Throughput("profile", batch_size, done, total, last - start))
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    print(
        f"cProfile of a second drain ({done} rows; event-loop thread only), top {top} by own time:"
    )
    print()
    print("```")
    stats.sort_stats("tottime").print_stats(top)
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip()))
    print("```")


# -- databases ------------------------------------------------------------------------


@asynccontextmanager
async def database(postgres: bool) -> AsyncIterator[str]:
    if postgres:
        async with throwaway_postgres("aiosignals_outbox_bench") as url:
            yield url
    else:
        with tempfile.TemporaryDirectory(prefix="aiosignals-outbox-bench-") as tmp:
            yield f"sqlite+aiosqlite:///{tmp}/outbox.db"


# -- main -----------------------------------------------------------------------------


def show(result: Throughput) -> None:
    boxed = (
        "" if result.rows == result.total else f" (time-boxed: {result.rows:,} of {result.total:,})"
    )
    print(
        f"| {result.label} | {result.rows:,}{boxed} | {result.seconds * 1000:,.0f} |"
        f" **{result.rate:,.0f}** |",
        flush=True,
    )


async def main_async(args: argparse.Namespace) -> None:
    n = args.n or (2000 if args.quick else 10_000)
    budget = args.budget or (10.0 if args.quick else 20.0)
    rounds = 3 if args.quick else 5
    print(f"Command: `python {' '.join(sys.argv)}`")
    print(f"Machine: {machine()}; {load_average()} at start")
    print(f"Versions: {versions(PACKAGES)}")
    started = time.perf_counter()
    async with database(args.postgres) as url:
        db = Database(url)
        try:
            await db.create_all(Base.metadata)
            print(f"Database: {await describe(db)}")
            print()
            print(f"## 1. Relay throughput: drain {n:,} outbox rows (no-op durable receivers)")
            print()
            fill_rate = await fill(db, n, 1)
            await snapshot(db, 1)
            if not db.is_sqlite:
                await fill(db, n, 4)
                await snapshot(db, 4)
            print(
                f"Filled by sending a named signal, {SENDS_PER_TRANSACTION} sends per"
                f" transaction: {fill_rate:,.0f} rows/s with one durable receiver. The rows"
                " are copied aside and put back before each drain (same ids, same payloads)."
                f" Each drain is time-boxed at {budget:g} s; throughput = rows finished / time"
                " to the last one."
            )
            print()
            print("| relay | rows | ms | events/s |")
            print("|---|---:|---:|---:|")
            results: list[Throughput] = []
            for batch_size in args.batch_sizes:
                results.append(await one_relay(db, batch_size, budget))
                show(results[-1])
            if args.relay_only:
                return
            if not db.is_sqlite:
                results.append(await one_relay(db, BATCH_SIZES[-1], budget, fresh_statistics=False))
                show(results[-1])
                for batch_size in BATCH_SIZES[1:]:
                    results.append(await two_relays_in_process(db, batch_size, budget))
                    show(results[-1])
                    results.append(await two_relays_in_processes(db, url, batch_size, budget))
                    show(results[-1])
            print()
            if not db.is_sqlite:
                print(
                    "PostgreSQL: the outbox is analyzed after the rows are put back (as"
                    " autovacuum would, sooner or later), except in the case that says"
                    " otherwise: analyzed while empty, as an outbox that is usually empty is"
                    " when a backlog builds up."
                )
                print(
                    "2 relays: 4 durable receivers, so every send wrote 4 rows"
                    f" ({n // 4:,} sends); a relay that claims nothing polls again after 1 ms."
                )
                best = max(r.rate for r in results if r.batch_size > 1)
                verdict = "met" if best >= GOAL else "NOT met"
                print(
                    f"Goal (>= {GOAL:,.0f} events/s on PostgreSQL with batching): {verdict};"
                    f" best {best:,.0f} events/s."
                )
                print()
            # A commit on an SQLite file waits for several fsyncs: far fewer saves there.
            save_n = (50 if args.quick else 100) if db.is_sqlite else (200 if args.quick else 500)
            print(
                f"## 2. Save cost: µs per repo.add() (own transaction), N={save_n},"
                f" {rounds} interleaved rounds, median"
            )
            print()
            cases, done = await save_costs(db, save_n, rounds, budget=2 * budget)
            base = cases[0].median_us
            print("| case | µs/save | vs none | min..max |")
            print("|---|---:|---:|---:|")
            for case in cases:
                extra = "" if case is cases[0] else f"{case.median_us - base:+.1f} µs"
                spread = f"{min(case.samples):.0f}..{max(case.samples):.0f}"
                print(f"| {case.label} | {case.median_us:.1f} | {extra} | {spread} |")
            print()
            print(f"Rounds run: {done}; the outbox is emptied after each batch (not timed).")
            if args.profile:
                print()
                await profile_relay(db, args.profile, budget, args.top)
        finally:
            await clean_up(db)
    print()
    print(f"Total time: {time.perf_counter() - started:.1f} s; {load_average()} at end")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--quick", action="store_true", help="N=2,000 rows, shorter save rounds")
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="a throwaway database on AIOSIGNALS_TEST_POSTGRES_URL's server",
    )
    parser.add_argument("--n", type=int, help="outbox rows per drain (overrides --quick)")
    parser.add_argument(
        "--budget", type=float, help="seconds a drain may take (20; 10 with --quick)"
    )
    parser.add_argument(
        "--profile",
        metavar="BATCH_SIZE",
        type=int,
        nargs="?",
        const=500,
        help="after timing, profile one drain at this batch size (default 500)",
    )
    parser.add_argument("--top", type=int, default=20, help="rows of the cProfile listing")
    parser.add_argument(
        "--batch-sizes",
        type=lambda text: [int(size) for size in text.split(",")],
        default=list(BATCH_SIZES),
        metavar="B,B,...",
        help="batch sizes of the one-relay drains (default 1,100,500)",
    )
    parser.add_argument(
        "--relay-only",
        action="store_true",
        help="only the one-relay drains: no two relays, no save cost, no profile",
    )
    parser.add_argument("--relay-worker", metavar="BATCH,BUDGET", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.relay_worker:
        batch_size, budget = args.relay_worker.split(",")
        url = os.environ["AIOSIGNALS_BENCH_RELAY_URL"]
        asyncio.run(relay_worker(url, int(batch_size), float(budget)))
    else:
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
