"""
Cost of the repository's signal layer on SQLAlchemy writes, against a plain AsyncSession.

Run ``python benchmarks/repository.py`` (an SQLite file in a temporary directory), with
``--quick`` for a shorter run, ``--db URL`` for any SQLAlchemy URL, or ``--postgres`` for a
throwaway database on the server of ``AIOSIGNALS_TEST_POSTGRES_URL`` (``source
/tmp/svc.env``), dropped afterwards. ``--profile`` also prints where the event loop's time
goes in one batch of the plain session and of the repository (cProfile). ``--only CASE``
runs one case untimed, for counting instructions, which a busy machine does not blur::

    valgrind --tool=callgrind python benchmarks/repository.py --postgres --only b --n 50
    valgrind --tool=callgrind python benchmarks/repository.py --postgres --only b --n 250

(the difference of the two totals over 200 is the instructions per save).

Every case saves N new entities (1000; 200 with ``--quick``), each save in a transaction
of its own unless the case says otherwise. Every case uses the engine of one
:class:`aiosignals.repository.sqlalchemy.Database`, so the plain session pays the same
SQLite set-up (pragmas, ``BEGIN IMMEDIATE``) as the repository. The cases are timed in
interleaved rounds (round-robin, the starting case rotating each round) so that noise hits
all of them alike; a case's figure is the median over its rounds of the batch time divided
by N. The garbage collector is collected before and disabled during each batch.

The issue's target: ``SQLAlchemyRepository.add`` with no receivers within 10% of the plain
session (case b against case a).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import itertools
import pstats
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from _common import describe, machine, throwaway_postgres, versions
from sqlalchemy import event
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from aiosignals import Phase
from aiosignals.models import PostSave, post_delete, post_save, pre_delete, pre_save
from aiosignals.repository.sqlalchemy import Database, SQLAlchemyRepository

PACKAGES = ["aiosignals", "sqlalchemy", "aiosqlite", "asyncpg", "anyio", "pydantic"]
"""The distributions whose versions the report names."""

TIMES = "\N{MULTIPLICATION SIGN}"
TARGET = 1.10  # the issue: no receivers within 10% of the plain session


class Base(DeclarativeBase):
    pass


# A unique table name per run: with --db the benchmark may write into a database that is
# not its own, so it creates its table and drops it again.
TABLE = f"bench_users_{uuid.uuid4().hex[:8]}"


class User(Base):
    __tablename__ = TABLE

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(100), unique=True)
    name: Mapped[str] = mapped_column(sa.String(100))


_serial = itertools.count()


def new_user() -> User:
    """Return a new, unsaved user with a unique email (the unique index is part of the cost)."""
    n = next(_serial)
    return User(email=f"user{n}@example.com", name=f"User {n}")


async def noop_receiver(sender: type[User], payload: PostSave[User]) -> None:
    return None


# -- cases ----------------------------------------------------------------------------

# Saves n entities; the batch is timed around it.
Run = Callable[[int], Awaitable[None]]


@dataclass
class Case:
    key: str
    label: str
    run: Run
    baseline: str | None = None  # the key of the case its ratio is taken against
    phase: Phase | None = None  # connect a no-op post_save receiver in this phase
    samples: list[float] = field(default_factory=list)  # wall µs per save, one per round
    cpu: list[float] = field(default_factory=list)  # loop-thread CPU µs per save, per round
    statements: float = 0.0  # SQL statements per save, counted in an untimed pass
    commits: float = 0.0  # commits per save, likewise

    @property
    def median_us(self) -> float:
        return statistics.median(self.samples)

    @property
    def median_cpu_us(self) -> float:
        return statistics.median(self.cpu)


def make_cases(db: Database) -> list[Case]:
    # The same session options as Database's own sessions: objects stay loaded on commit.
    sessions = async_sessionmaker(db.engine, expire_on_commit=False)
    repo = SQLAlchemyRepository(User, db)

    async def plain_each(n: int) -> None:
        for _ in range(n):
            async with sessions() as session, session.begin():
                session.add(new_user())

    async def repo_each(n: int) -> None:
        add = repo.add
        for _ in range(n):
            await add(new_user())

    async def repo_one_transaction(n: int) -> None:
        add = repo.add
        async with db.transaction():
            for _ in range(n):
                await add(new_user())

    async def plain_one_transaction(n: int) -> None:
        # A flush per entity, as repo.add does: each save gets its key before the next.
        async with sessions() as session, session.begin():
            for _ in range(n):
                session.add(new_user())
                await session.flush()

    async def plain_savepoints(n: int) -> None:
        # What repo.add does inside a transaction, minus the signal layer: a savepoint each.
        async with sessions() as session, session.begin():
            for _ in range(n):
                async with session.begin_nested():
                    session.add(new_user())
                    await session.flush()

    async def plain_one_flush(n: int) -> None:
        async with sessions() as session, session.begin():
            session.add_all([new_user() for _ in range(n)])

    return [
        Case("a", "plain AsyncSession, a transaction per save", plain_each),
        Case("b", "repo.add, no receivers", repo_each, baseline="a"),
        Case("c", "repo.add, one post_save receiver", repo_each, "a", Phase.IMMEDIATE),
        Case(
            "d", "repo.add, one AFTER_COMMIT post_save receiver", repo_each, "a", Phase.AFTER_COMMIT
        ),
        Case("e0", "plain AsyncSession, one transaction, flush per save", plain_one_transaction),
        Case("e", "repo.add in one db.transaction(), no receivers", repo_one_transaction, "e0"),
        Case(
            "e2",
            "plain AsyncSession, one transaction, a savepoint + flush per save",
            plain_savepoints,
            "e0",
        ),
        Case(
            "e1",
            "plain AsyncSession, one transaction, one flush (batched INSERT; for scale)",
            plain_one_flush,
            "e0",
        ),
    ]


@asynccontextmanager
async def receivers_of(case: Case) -> AsyncIterator[None]:
    """Connect the case's receiver for the duration of its batch (outside the timing)."""
    if case.phase is None:
        yield
        return
    post_save.connect(noop_receiver, sender=User, phase=case.phase)
    try:
        yield
    finally:
        post_save.disconnect(noop_receiver, sender=User)


async def batch(case: Case, n: int) -> tuple[float, float]:
    """Run one batch of *case*; return wall and event-loop-thread CPU µs per save."""
    async with receivers_of(case):
        gc.collect()
        gc.disable()
        try:
            # The event loop's thread only: aiosqlite's worker thread runs the same
            # statements for every case, and waiting for it or the disk is not CPU.
            cpu = time.thread_time_ns()
            start = time.perf_counter_ns()
            await case.run(n)
            elapsed = time.perf_counter_ns() - start
            cpu = time.thread_time_ns() - cpu
        finally:
            gc.enable()
    return elapsed / n / 1000, cpu / n / 1000


async def run_rounds(cases: list[Case], n: int, rounds: int, budget: float) -> int:
    """
    Time every case once per round, the starting case rotating from round to round.

    Stops early (after at least 3 rounds) once *budget* seconds have gone, so that a slow
    disk cannot make the run endless; returns the number of rounds run.
    """
    started = time.perf_counter()
    for case in cases:
        await batch(case, max(10, n // 10))  # warm-up: connections, statement caches
    for round_no in range(rounds):
        shift = round_no % len(cases)
        for case in cases[shift:] + cases[:shift]:
            wall, cpu = await batch(case, n)
            case.samples.append(wall)
            case.cpu.append(cpu)
        if round_no >= 2 and time.perf_counter() - started > budget:
            return round_no + 1
    return rounds


async def count_statements(db: Database, cases: list[Case], n: int) -> None:
    """Count the SQL statements and commits per save of each case, in an untimed pass."""
    counts = {"statements": 0, "commits": 0}

    def on_statement(*_: object) -> None:
        counts["statements"] += 1

    def on_commit(*_: object) -> None:
        counts["commits"] += 1

    target = db.engine.sync_engine
    event.listen(target, "before_cursor_execute", on_statement)
    event.listen(target, "commit", on_commit)
    try:
        for case in cases:
            counts.update(statements=0, commits=0)
            async with receivers_of(case):
                await case.run(n)
            case.statements = counts["statements"] / n
            case.commits = counts["commits"] / n
    finally:
        event.remove(target, "before_cursor_execute", on_statement)
        event.remove(target, "commit", on_commit)


# Where the loop waits for the database (aiosqlite's thread, a socket), not work of its own.
WAITS = ("poll' of 'select.epoll", "put_nowait' of '_queue.SimpleQueue", "'recv' of")


def function_name(func: tuple[str, int, str]) -> str:
    filename, line, name = func
    # Shortest readable path: the package onwards (site-packages/..., the stdlib, this repo).
    filename = re.sub(
        r"^.*?(site-packages/|/lib/python3\.\d+/|(?=aiosignals/)|(?=benchmarks/))", "", filename
    )
    return f"{filename}:{line}({name})" if line else name


THIS_FILE = "benchmarks/"
Profiled = dict[str, tuple[int, float, float]]  # function -> (calls, tottime s, cumtime s)


async def profile_case(case: Case, n: int) -> Profiled:
    profiler = cProfile.Profile()
    async with receivers_of(case):
        profiler.enable()
        await case.run(n)
        profiler.disable()
    stats: dict[tuple[str, int, str], tuple[int, int, float, float, Any]]
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    return {
        function_name(func): (calls, tottime, cumtime)
        for func, (_, calls, tottime, cumtime, _) in stats.items()
    }


async def profile(cases: list[Case], n: int, keys: list[str], top: int) -> None:
    """
    Print the event loop thread's cProfile of one batch of each case in *keys*.

    For a case with a base, the functions whose call counts differ from the base's are
    listed, the largest difference in own time first: that is where its extra time goes.
    """
    by_key = {case.key: case for case in cases}
    wanted = [by_key[key] for key in keys]
    for case in list(wanted):
        base = by_key.get(case.baseline) if case.baseline else None
        if base is not None and base not in wanted:
            wanted.insert(wanted.index(case), base)
    profiles: dict[str, Profiled] = {}
    print(f"## cProfile of one batch of {n} saves per case (event loop thread)")
    print()
    print("| case | calls/save | profiled µs/save | of which waiting for the database |")
    print("|---|---:|---:|---:|")
    for case in wanted:
        found = profiles[case.key] = await profile_case(case, n)
        calls = sum(calls for calls, _, _ in found.values())
        total = sum(tottime for _, tottime, _ in found.values())
        waiting = sum(t for name, (_, t, _) in found.items() if any(w in name for w in WAITS))
        print(f"| {case.key} | {calls / n:.0f} | {total * 1e6 / n:.0f} | {waiting * 1e6 / n:.0f} |")
    print()
    print(
        "Profiled times include the profiler's own overhead; the call counts are exact (a"
        " coroutine counts once per resumption)."
    )
    for case in wanted:
        if case.baseline is None or case.baseline not in profiles:
            continue
        mine, base = profiles[case.key], profiles[case.baseline]
        rows = []
        for name in mine.keys() | base.keys():
            calls, tottime, cumtime = mine.get(name, (0, 0.0, 0.0))
            base_calls, base_tottime, base_cumtime = base.get(name, (0, 0.0, 0.0))
            # This file's own frames (the loops that drive the saves) are not the cost.
            if calls != base_calls and not name.startswith(THIS_FILE):
                rows.append(
                    (
                        (tottime - base_tottime) * 1e6 / n,
                        (calls - base_calls) / n,
                        (cumtime - base_cumtime) * 1e6 / n,
                        name,
                    )
                )
        rows.sort(reverse=True)
        print()
        print(
            f"### {case.key} against {case.baseline}: functions called a different number of times"
        )
        print()
        print("| Δ own µs/save | Δ calls/save | Δ cumulative µs/save | function |")
        print("|---:|---:|---:|---|")
        for own, calls_delta, cumulative, name in rows[:top]:
            print(f"| {own:+.1f} | {calls_delta:+.2f} | {cumulative:+.1f} | `{name}` |")
    print()


# -- databases ------------------------------------------------------------------------


def async_url(url: str) -> str:
    """Give a bare ``postgresql://`` or ``sqlite://`` URL the async driver the benchmark uses."""
    for bare, driver in (
        ("postgresql://", "postgresql+asyncpg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if url.startswith(bare):
            return driver + url[len(bare) :]
    return url


@asynccontextmanager
async def database(args: argparse.Namespace) -> AsyncIterator[str]:
    """Yield the URL to benchmark on, per the command line."""
    if args.postgres:
        async with throwaway_postgres("aiosignals_bench") as url:
            yield url
    elif args.db:
        yield async_url(args.db)
    else:
        with tempfile.TemporaryDirectory(prefix="aiosignals-bench-") as tmp:
            yield f"sqlite+aiosqlite:///{tmp}/bench.db"


# -- report ---------------------------------------------------------------------------


def paired_ratio(case: Case, base: Case) -> float:
    """Median over the rounds of the ratio of the two cases' batches in the same round."""
    return statistics.median(x / y for x, y in zip(case.samples, base.samples, strict=True))


def report(cases: list[Case]) -> None:
    by_key = {case.key: case for case in cases}
    print(
        "| case | what | wall µs/save | ratio | paired ratio | wall min..max |"
        " loop CPU µs/save | CPU ratio | SQL + commits per save |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for case in cases:
        base = by_key.get(case.baseline) if case.baseline else None
        if base is None:
            ratio = paired = cpu_ratio = "base"
        else:
            ratio = f"{case.median_us / base.median_us:.3f}{TIMES} {base.key}"
            paired = f"{paired_ratio(case, base):.3f}{TIMES}"
            cpu_ratio = f"{case.median_cpu_us / base.median_cpu_us:.3f}{TIMES}"
        spread = f"{min(case.samples):.0f}..{max(case.samples):.0f}"
        print(
            f"| {case.key} | {case.label} | {case.median_us:.1f} | {ratio} | {paired} |"
            f" {spread} | {case.median_cpu_us:.1f} | {cpu_ratio} |"
            f" {case.statements:.3g} + {case.commits:.3g} |"
        )
    print()
    print(
        "wall: median elapsed time per save. paired ratio: median over the rounds of this"
        " case's batch against its base's batch of the same round. loop CPU: CPU time of the"
        " event loop's thread per save, which neither disk waits nor aiosqlite's worker"
        " thread (the same statements in every case) blur; it is where the signal layer's"
        " cost shows. SQL: statements given to the driver (SQLite's BEGIN IMMEDIATE"
        " included, asyncpg's implicit BEGIN not), commits counted apart."
    )
    print()
    a, b = by_key["a"], by_key["b"]
    wall = b.median_us / a.median_us
    verdict = "met" if wall <= TARGET else "NOT met"
    print(
        f"Target (b within {TARGET - 1:.0%} of a, wall): {verdict}: {wall:.3f}{TIMES}"
        f" ({b.median_us - a.median_us:+.1f} µs per save), paired {paired_ratio(b, a):.3f}{TIMES};"
        f" loop CPU {b.median_cpu_us / a.median_cpu_us:.3f}{TIMES}"
        f" ({b.median_cpu_us - a.median_cpu_us:+.1f} µs per save)."
    )
    e, e0, e2 = by_key["e"], by_key["e0"], by_key["e2"]
    print(
        f"In one transaction: e against e0 {e.median_us / e0.median_us:.3f}{TIMES} wall"
        f" ({e.median_us - e0.median_us:+.1f} µs per save), loop CPU"
        f" {e.median_cpu_us / e0.median_cpu_us:.3f}{TIMES}; of which the savepoints (e2 against"
        f" e0) {e2.median_us - e0.median_us:+.1f} µs wall and the layer (e against e2)"
        f" {e.median_us - e2.median_us:+.1f} µs wall, {e.median_cpu_us - e2.median_cpu_us:+.1f} µs"
        " loop CPU."
    )


async def main_async(args: argparse.Namespace) -> None:
    n = args.n or (200 if args.quick else 1000)
    rounds = args.rounds or (5 if args.quick else 7)
    budget = args.budget or (40.0 if args.quick else 90.0)
    command = "python " + " ".join([sys.argv[0], *sys.argv[1:]])
    print(f"Command: `{command}`")
    print(f"Machine: {machine()}")
    print(f"Versions: {versions(PACKAGES)}")
    for signal in (pre_save, post_save, pre_delete, post_delete):
        if signal.has_receivers_for(User):
            raise SystemExit(f"{signal!r} already has receivers: the figures would be wrong")
    started = time.perf_counter()
    async with database(args) as url:
        db = Database(url)
        try:
            async with db.engine.begin() as connection:
                await connection.run_sync(Base.metadata.create_all)
            print(f"Database: {await describe(db)}")
            cases = make_cases(db)
            if args.only:
                # For an instruction counter (callgrind), which times nothing itself: run
                # one case untimed; the difference between two N cancels the start-up.
                case = {case.key: case for case in cases}[args.only]
                await case.run(20)
                async with receivers_of(case):
                    await case.run(n)
                print(f"Ran {n} saves of case {case.key} ({case.label}), untimed.")
                return
            print(
                f"Method: N={n} saves per batch, up to {rounds} interleaved rounds (fewer, at"
                f" least 3, if they take over {budget:g} s), median per save;"
                " gc collected before and disabled during each batch."
            )
            await count_statements(db, cases, 20)
            done = await run_rounds(cases, n, rounds, budget)
            print(f"Rounds run: {done}")
            print()
            report(cases)
            if args.profile:
                print()
                await profile(cases, n, args.profile.split(","), args.top)
        finally:
            async with db.engine.begin() as connection:
                await connection.run_sync(Base.metadata.drop_all)
            await db.dispose()
    print()
    print(f"Total time: {time.perf_counter() - started:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--quick", action="store_true", help="N=200 and 5 rounds")
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--db", metavar="URL", help="an SQLAlchemy URL (a table is created and dropped)"
    )
    where.add_argument(
        "--postgres",
        action="store_true",
        help="a throwaway database on AIOSIGNALS_TEST_POSTGRES_URL's server",
    )
    parser.add_argument("--n", type=int, help="saves per batch (overrides --quick)")
    parser.add_argument("--rounds", type=int, help="rounds (overrides --quick)")
    parser.add_argument(
        "--budget", type=float, help="seconds after which no new round starts (90; 40 quick)"
    )
    parser.add_argument(
        "--profile",
        metavar="CASES",
        nargs="?",
        const="b,e",
        help="after timing, cProfile one batch of these cases and their bases (default b,e)",
    )
    parser.add_argument("--top", type=int, default=25, help="rows of each profile")
    parser.add_argument(
        "--only",
        metavar="CASE",
        choices=["a", "b", "c", "d", "e0", "e", "e2", "e1"],
        help="run N saves of one case untimed, for an instruction counter such as callgrind",
    )
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
