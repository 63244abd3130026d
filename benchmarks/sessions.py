"""
Cost of instrumenting an application's own sessions, against a plain ``AsyncSession``.

Run ``python benchmarks/sessions.py`` (an SQLite file in a temporary directory), with
``--quick`` for a shorter run, ``--db URL`` for any SQLAlchemy URL, or ``--postgres`` for a
throwaway database on the server of ``AIOSIGNALS_TEST_POSTGRES_URL``, dropped afterwards.

Every case inserts N new rows (1000; 200 with ``--quick``) the way an application does:
``session.add(obj)`` then ``await session.commit()``, one transaction per row, on the one
engine of one :class:`aiosignals.sqlalchemy.Database`:

- ``plain``: a plain ``async_sessionmaker`` (nothing instrumented);
- ``instrumented``: the same sessionmaker after ``instrument()``, no receiver connected;
- ``one receiver``: instrumented, with one no-op async ``post_save`` receiver.

The cases are timed in interleaved rounds (round-robin, the starting case rotating), so
that noise falls on all of them alike; a figure is the median over the rounds of the batch
time divided by N, wall clock and CPU (the process's, aiosqlite's thread included: on
SQLite the wall clock is mostly the disk's fsync). The issue's goal: ``instrumented``
within 1.10x of ``plain``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable

import sqlalchemy as sa
from _common import describe, machine, throwaway_postgres, versions
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from aiosignals.models import PostSave, post_save
from aiosignals.sqlalchemy import Database, instrument

TARGET = 1.10


class Base(DeclarativeBase):
    pass


class User(Base):
    # A unique name per run: with --db the benchmark may write into a database of others.
    __tablename__ = f"bench_session_users_{uuid.uuid4().hex[:8]}"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(100), unique=True)


_serial = itertools.count()


async def noop(sender: type[User], payload: PostSave[User]) -> None:
    return None


async def insert(maker: Callable[[], AsyncSession], n: int) -> None:
    async with maker() as session:
        for _ in range(n):
            session.add(User(email=f"user{next(_serial)}@example.com"))
            await session.commit()


async def run(url: str, n: int, rounds: int) -> None:
    async with Database(url) as db:
        await db.create_all(Base.metadata)
        print(f"# {await describe(db)}")
        print(f"# {machine()}")
        print(f"# {versions(['aiosignals', 'sqlalchemy', 'aiosqlite', 'asyncpg'])}")
        plain = async_sessionmaker(db.engine, expire_on_commit=False)
        instrumented = instrument(async_sessionmaker(db.engine, expire_on_commit=False))
        cases: dict[str, tuple[Callable[[], AsyncSession], bool]] = {
            "plain": (plain, False),
            "instrumented": (instrumented, False),
            "one receiver": (instrumented, True),
        }
        samples: dict[str, list[float]] = {name: [] for name in cases}
        cpu: dict[str, list[float]] = {name: [] for name in cases}
        for maker, _ in cases.values():  # warm-up: connections, statement caches
            await insert(maker, max(10, n // 20))
        names = list(cases)
        for round_ in range(rounds):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                maker, with_receiver = cases[name]
                if with_receiver:
                    post_save.connect(noop, sender=User)
                gc.collect()
                gc.disable()
                started, started_cpu = time.perf_counter(), time.process_time()
                try:
                    await insert(maker, n)
                finally:
                    elapsed = time.perf_counter() - started
                    elapsed_cpu = time.process_time() - started_cpu
                    gc.enable()
                    post_save.disconnect(noop, sender=User)
                samples[name].append(elapsed / n * 1e6)
                cpu[name].append(elapsed_cpu / n * 1e6)
        async with db.engine.begin() as connection:
            await connection.run_sync(User.__table__.drop)
    base = statistics.median(samples["plain"])
    base_cpu = statistics.median(cpu["plain"])
    print(f"{n} inserts per batch, {rounds} rounds; median per insert (add + commit)")
    print(f"  {'case':<14} {'wall µs':>9} {'ratio':>6}   {'CPU µs':>8} {'ratio':>6}")
    for name in names:
        wall, used = statistics.median(samples[name]), statistics.median(cpu[name])
        print(f"  {name:<14} {wall:9.1f} {wall / base:5.2f}x   {used:8.1f} {used / base_cpu:5.2f}x")
    ratio = statistics.median(samples["instrumented"]) / base
    verdict = "within" if ratio <= TARGET else "OVER"
    print(f"instrumented, no receiver: {ratio:.2f}x plain ({verdict} the {TARGET:.2f}x goal)")


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--quick", action="store_true", help="200 inserts, 5 rounds")
    parser.add_argument("--db", help="an SQLAlchemy URL (default: a temporary SQLite file)")
    parser.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL db")
    parser.add_argument("--n", type=int, help="inserts per batch")
    args = parser.parse_args(argv)
    n = args.n or (200 if args.quick else 1000)
    rounds = 5 if args.quick else 11
    if args.postgres:
        async with throwaway_postgres("aiosignals_bench") as url:
            await run(url, n, rounds)
    elif args.db:
        await run(args.db, n, rounds)
    else:
        with tempfile.TemporaryDirectory() as directory:
            await run(f"sqlite+aiosqlite:///{directory}/bench.db", n, rounds)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
