"""
The outbox relay on PostgreSQL at scale (#15): wake-up latency, slow receivers, killed relays.

Run ``python benchmarks/relay_scale.py`` with ``AIOSIGNALS_TEST_POSTGRES_URL`` set (a
throwaway database is made on that server and dropped afterwards); ``--quick`` for a shorter
run, ``--only latency,slow,kill`` for some sections. Relays run in processes of their own
(this script, started again as a worker), the writer in this one.

1. Commit-to-delivery latency. One relay process running ``OutboxRelay.run()`` with the
   default ``poll_interval`` (0.5 s), woken by LISTEN/NOTIFY, then with ``listen=False``
   (polling only). This process sends a named signal with one durable receiver inside a
   transaction, the payload carrying ``time.time()`` taken at the send, and commits; the
   receiver, in the relay process, reports ``time.time()`` minus that. One row at a time,
   the next sent 0 to 10 ms (polling: 0 to 500 ms) after the previous was delivered; the
   first 5 are not counted.
2. A slow durable receiver: ``await anyio.sleep(0.002)`` per call, as an HTTP call would.
   1,000 ``post_save`` rows over 200 entities (keys): 200 adds and 4 updates of each. One
   relay process, then two, each calling ``run_once()`` until the outbox is empty (polling
   every millisecond when it claims nothing), in 5 rounds (3 with ``--quick``), the order
   alternating; events/s = rows / time from "go" to the last row finished, and the median
   over the rounds. Each relay process also reports where its time went: the mean time of a
   receiver call (asked: 2 ms), how many calls were in flight on average (seconds inside
   receivers / seconds of the run), the seconds inside SQL statements (cursor execute to
   result) and the process's CPU seconds. The rows are copied aside
   once and put back before each run. ``--relay-option NAME=VALUE`` passes more options to
   the relays (an int or a float, or a string), e.g. one that bounds per-key concurrency.
3. A relay SIGKILLed mid-batch. 100,000 rows for one durable no-op receiver, then 2,000 for
   one taking 2 ms per call; relay A runs (``run()``, the default lease and poll interval),
   and relay B is started once A delivers (B claims only between A's batches: one receiver's
   rows go in order). 200 rows after B is up, A is SIGKILLed while it holds a batch; B takes
   over. Duplicates = deliveries of
   a row beyond its first (each delivery is appended to a file with ``O_APPEND``, so SIGKILL
   loses none); takeover = seconds from the SIGKILL to B's deliveries of the rows A held
   leased when it died.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import signal
import statistics
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import sqlalchemy as sa
from _common import describe, load_average, machine, throwaway_postgres, versions
from sqlalchemy import event
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from aiosignals import Event, Signal
from aiosignals.models import PostSave, post_save
from aiosignals.outbox import OutboxRelay, current_delivery
from aiosignals.outbox._table import outbox
from aiosignals.repository.sqlalchemy import Database, SQLAlchemyRepository

PACKAGES = ["aiosignals", "sqlalchemy", "asyncpg", "anyio", "pydantic"]
RUN = os.environ.setdefault("AIOSIGNALS_BENCH_RUN", uuid.uuid4().hex[:8])
SLOW_CALL = 0.002  # seconds per call of the slow receiver


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = f"bench_scale_items_{RUN}"

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[int]


class Job(Event):
    n: int
    sent_at: float


job = Signal(Job, name="benchmarks.relay_scale.job")
SPENT = {"receiver": 0.0, "sql": 0.0}
"""A relay process's seconds inside its receivers and inside SQL statements."""


def log_delivery(delivery_id: int) -> None:
    # One write(2) per line on an O_APPEND descriptor: a SIGKILL loses no finished line.
    fd = int(os.environ["AIOSIGNALS_BENCH_LOG_FD"])
    os.write(fd, f"{os.getpid()} {delivery_id} {time.time():.6f}\n".encode())


async def report_latency(sender: str, payload: Job) -> None:
    print(f"{time.time() - payload.sent_at:.6f}", flush=True)


async def noop_logged(sender: str, payload: Job) -> None:
    delivery = current_delivery()
    assert delivery is not None
    log_delivery(delivery.id)


async def slow_logged(sender: str, payload: Job) -> None:
    delivery = current_delivery()
    assert delivery is not None
    await anyio.sleep(SLOW_CALL)
    log_delivery(delivery.id)


async def slow_saved(sender: type[Item], payload: PostSave[Item]) -> None:
    started = time.perf_counter()
    await anyio.sleep(SLOW_CALL)
    SPENT["receiver"] += time.perf_counter() - started


RECEIVERS: dict[str, Any] = {
    "latency": report_latency,
    "kill-noop": noop_logged,
    "kill-slow": slow_logged,
}


def connect(kind: str) -> None:
    """Connect the durable receiver of section *kind* (the same in every process)."""
    if kind == "slow":
        post_save.connect(
            slow_saved, sender=Item, durable=True, dispatch_uid="benchmarks.scale.slow"
        )
    else:
        job.connect(RECEIVERS[kind], durable=True, dispatch_uid=f"benchmarks.scale.{kind}")


def disconnect(kind: str) -> None:
    if kind == "slow":
        post_save.disconnect(dispatch_uid="benchmarks.scale.slow")
    else:
        job.disconnect(dispatch_uid=f"benchmarks.scale.{kind}")


def time_sql(db: Database) -> None:
    engine = db.engine.sync_engine

    def before(conn: Any, *_: Any) -> None:
        conn.info["bench_started"] = time.perf_counter()

    def after(conn: Any, *_: Any) -> None:
        SPENT["sql"] += time.perf_counter() - conn.info.pop("bench_started")

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)


async def outbox_count(db: Database) -> int:
    async with db.engine.connect() as connection:
        return int(await connection.scalar(sa.select(sa.func.count()).select_from(outbox)) or 0)


# -- worker processes -----------------------------------------------------------------


async def worker(role: str, options: dict[str, Any]) -> None:
    """A relay process: *role* is the section's receiver kind; options from the parent."""
    # Quiet: the relay taking over warns of each row the killed relay had started.
    logging.getLogger("aiosignals").setLevel(logging.ERROR)
    async with Database(os.environ["AIOSIGNALS_BENCH_URL"]) as db:
        async with db.engine.connect() as connection:
            await connection.scalar(sa.text("select 1"))  # a pooled connection, before the clock
        connect(role)
        relay = OutboxRelay(db, **options)
        print("ready", relay.name, flush=True)
        if role != "slow":
            await relay.run()  # until SIGKILLed or SIGTERMed
            return
        time_sql(db)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        start, cpu = time.perf_counter(), time.process_time()
        finished, last = 0, start
        while True:
            done = await relay.run_once()
            if done:
                finished += done
                last = time.perf_counter()
            elif not await outbox_count(db):
                break
            else:
                await anyio.sleep(0.001)
        SPENT["cpu"] = time.process_time() - cpu
        print(json.dumps({"rows": finished, "seconds": last - start, **SPENT}), flush=True)


async def start_worker(url: str, role: str, options: dict[str, Any], log: Path | None) -> Any:
    env = {**os.environ, "AIOSIGNALS_BENCH_URL": url}
    pass_fds: tuple[int, ...] = ()
    if log is not None:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        env["AIOSIGNALS_BENCH_LOG_FD"] = str(fd)
        pass_fds = (fd,)
    process = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--worker", role, json.dumps(options),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).parent.parent, env=env, pass_fds=pass_fds,
    )  # fmt: skip
    if log is not None:
        os.close(pass_fds[0])
    line = (await process.stdout.readline()).split()
    if not line or line[0] != b"ready":
        raise SystemExit(f"relay worker did not start: {line!r}")
    process.relay_name = line[1].decode()
    return process


async def stop(process: Any) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 20)
        except TimeoutError:
            process.kill()
            await process.wait()


# -- 1. latency -----------------------------------------------------------------------


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def latency(db: Database, url: str, samples: int, listen: bool) -> list[float]:
    relay = await start_worker(url, "latency", {"listen": listen}, None)
    found: list[float] = []
    # Polling: the next row comes anywhere in the poll interval, not just after the relay's
    # last claim (which would make every wait a whole interval).
    spacing = 0.01 if listen else 0.5
    try:
        connect("latency")
        await anyio.sleep(0.5)  # the relay's first claim and its LISTEN
        for n in range(samples + 5):
            async with db.transaction():
                await job.send("bench", Job(n=n, sent_at=time.time()))
            line = await asyncio.wait_for(relay.stdout.readline(), 10)
            if n >= 5:
                found.append(float(line))
            await anyio.sleep(random.uniform(0, spacing))
    finally:
        disconnect("latency")
        await stop(relay)
    return found


async def section_latency(db: Database, url: str, quick: bool) -> None:
    print("## 1. Commit-to-delivery latency (one relay process, poll_interval 0.5 s)")
    print()
    print("| relay | samples | p50 ms | p99 ms | mean ms | max ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, listen, samples in (
        ("LISTEN/NOTIFY (default)", True, 100 if quick else 300),
        ("polling only (listen=False)", False, 20 if quick else 60),
    ):
        found = [s * 1000 for s in await latency(db, url, samples, listen)]
        print(
            f"| {label} | {len(found)} | **{percentile(found, 0.5):.1f}** |"
            f" {percentile(found, 0.99):.1f} | {statistics.mean(found):.1f} |"
            f" {max(found):.1f} |",
            flush=True,
        )
    print()


# -- 2. a slow receiver ---------------------------------------------------------------


async def fill_items(db: Database, keys: int, rows: int) -> None:
    """Write *rows* post_save rows over *keys* entities: adds, then updates in turn."""
    items = SQLAlchemyRepository(Item, db)
    connect("slow")
    try:
        async with db.transaction():
            for key in range(1, keys + 1):
                await items.add(Item(id=key, version=0))
        for version in range(1, rows // keys):
            async with db.transaction():
                for key in range(1, keys + 1):
                    await items.save(Item(id=key, version=version))
    finally:
        disconnect("slow")
    async with db.engine.begin() as connection:
        await connection.execute(
            sa.text(f"CREATE TABLE bench_scale_rows_{RUN} AS TABLE {outbox.name}")
        )
        await connection.execute(outbox.delete())


async def slow_run(url: str, db: Database, relays: int, options: dict[str, Any]) -> dict[str, Any]:
    async with db.engine.begin() as connection:
        await connection.execute(sa.text(f"INSERT INTO {outbox.name} TABLE bench_scale_rows_{RUN}"))
    async with db.engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(sa.text(f"ANALYZE {outbox.name}"))
    total = await outbox_count(db)
    workers = [await start_worker(url, "slow", options, None) for _ in range(relays)]
    try:
        for process in workers:
            process.stdin.write(b"go\n")
            await process.stdin.drain()
        results = [json.loads((await process.communicate())[0]) for process in workers]
    finally:
        for process in workers:
            await stop(process)
    left = await outbox_count(db)
    rows = sum(r["rows"] for r in results)
    if left or rows < total:
        raise SystemExit(f"{relays} relays: {rows} of {total} rows finished, {left} left")
    seconds = max(r["seconds"] for r in results)
    return {"relays": relays, "rows": rows, "seconds": seconds, "each": results}


async def section_slow(db: Database, url: str, options: dict[str, Any], rounds: int) -> None:
    keys, rows = 200, 1000
    print(
        f"## 2. A durable receiver taking {SLOW_CALL * 1000:g} ms per call:"
        f" {rows:,} rows over {keys} keys"
    )
    print()
    await fill_items(db, keys, rows)
    print(f"Relay options: {options or 'the defaults'}.")
    print()
    print(
        "| relays | rows | s | events/s | each relay: rows, mean call, calls in flight,"
        " seconds in SQL and on the CPU, of its seconds |"
    )
    print("|---:|---:|---:|---:|---|")
    sequential = 1 / SLOW_CALL
    rates: dict[int, list[float]] = {1: [], 2: []}
    for round_no in range(rounds):
        for relays in (1, 2) if round_no % 2 == 0 else (2, 1):
            rates[relays].append(await slow_round(url, db, relays, options))
    print()
    for relays, found in rates.items():
        each = ", ".join(f"{rate:,.0f}" for rate in found)
        print(
            f"{relays} relay process(es): median **{statistics.median(found):,.0f}** events/s"
            f" over {rounds} rounds ({each})."
        )
    print()
    print(
        f"The receiver's sequential limit: {sequential:,.0f} calls/s; the goal (#15) is 3x that"
        f" ({3 * sequential:,.0f} events/s) with two relays."
    )
    print()


async def slow_round(url: str, db: Database, relays: int, options: dict[str, Any]) -> float:
    """Run one drain with *relays* relay processes, print its row; return its events/s."""
    found = await slow_run(url, db, relays, options)
    each = "; ".join(
        f"{r['rows']} rows, {r['receiver'] / r['rows'] * 1000:.2f} ms/call,"
        f" {r['receiver'] / r['seconds']:.1f} in flight, SQL {r['sql']:.2f} s,"
        f" CPU {r['cpu']:.2f} s of {r['seconds']:.2f} s"
        for r in found["each"]
    )
    rate = found["rows"] / found["seconds"]
    print(
        f"| {relays} | {found['rows']:,} | {found['seconds']:.2f} | **{rate:,.0f}** | {each} |",
        flush=True,
    )
    return rate


# -- 3. a killed relay ----------------------------------------------------------------


def deliveries(log: Path) -> list[tuple[int, int, float]]:
    found = []
    for line in log.read_text().splitlines():
        pid, delivery_id, at = line.split()
        found.append((int(pid), int(delivery_id), float(at)))
    return found


async def fill_jobs(db: Database, kind: str, rows: int) -> None:
    """Write *rows* outbox rows for the receiver *kind* as sends would, in one statement."""
    now = time.time()
    statement = sa.text(
        f"INSERT INTO {outbox.name} (dispatch_uid, signal, sender, payload, status, attempts,"
        " failures, created_at, available_at) SELECT :uid, :signal, 'str:bench',"
        " format('{\"n\": %s, \"sent_at\": 0}', g), 'pending', 0, 0, :now, :now"
        " FROM generate_series(1, :rows) AS g"
    )
    params = {"uid": f"benchmarks.scale.{kind}", "signal": job.name, "now": now, "rows": rows}
    async with db.engine.begin() as connection:
        await connection.execute(statement, params)


async def delivered_by(log: Path, pid: int, at_least: int) -> int:
    with anyio.fail_after(60):
        while (count := sum(1 for p, _, _ in deliveries(log) if p == pid)) < at_least:  # noqa: ASYNC110 -- another process's file
            await anyio.sleep(0.002)
    return count


async def leased_to(db: Database, relay_name: str) -> set[int]:
    query = sa.select(outbox.c.id).where(
        outbox.c.locked_by == relay_name, outbox.c.locked_until > time.time()
    )
    async with db.engine.connect() as connection:
        return set((await connection.scalars(query)).all())


async def kill_case(db: Database, url: str, kind: str, rows: int, tmp: Path) -> str:
    log = tmp / f"{kind}.log"
    await fill_jobs(db, kind, rows)
    first = await start_worker(url, kind, {}, log)
    await delivered_by(log, first.pid, 1)
    # B is up before the kill (its start-up is not timed); it claims between A's batches.
    second = await start_worker(url, kind, {}, log)
    try:
        await delivered_by(log, first.pid, await delivered_by(log, first.pid, 1) + 200)
        with anyio.fail_after(60):
            while not await leased_to(db, first.relay_name):
                if not await outbox_count(db):
                    raise SystemExit(f"{kind}: the outbox was drained before the kill: more rows")
                await anyio.sleep(0.001)
        first.kill()
        killed_at = time.time()
        await first.wait()
        held = await leased_to(db, first.relay_name)
        with anyio.fail_after(120):
            while await outbox_count(db):  # noqa: ASYNC110 -- other processes' rows
                await anyio.sleep(0.05)
    finally:
        first.kill() if first.returncode is None else None
        await stop(second)
    found = deliveries(log)
    counts = Counter(delivery_id for _, delivery_id, _ in found)
    by_a = sum(1 for p, _, _ in found if p == first.pid)
    taken = [at for p, i, at in found if p == second.pid and i in held]
    takeover = (max(taken) - killed_at) if taken else float("nan")
    first_taken = (min(taken) - killed_at) if taken else float("nan")
    duplicates = sum(counts.values()) - len(counts)
    lost = rows - len(counts)
    return (
        f"| {kind} | {by_a} | {len(held)} | {first_taken:.2f} | {takeover:.2f} |"
        f" **{duplicates}** | {lost} |"
    )


async def section_kill(db: Database, url: str, quick: bool) -> None:
    import tempfile

    print("## 3. A relay SIGKILLed mid-batch (one receiver, default lease and poll interval)")
    print()
    print(
        "| receiver | delivered by A | leased to A at the kill | s to B's first of them |"
        " s to B's last of them | duplicates | lost |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="aiosignals-scale-") as tmp:
        for kind, rows in (("kill-noop", 100_000), ("kill-slow", 2_000)):
            print(await kill_case(db, url, kind, rows, Path(tmp)), flush=True)
    print()


# -- main -----------------------------------------------------------------------------


def parse_option(text: str) -> tuple[str, Any]:
    name, _, value = text.partition("=")
    for kind in (int, float):
        try:
            return name, kind(value)
        except ValueError:
            pass
    return name, value


async def main_async(args: argparse.Namespace) -> None:
    sections = set(args.only.split(","))
    options = dict(parse_option(o) for o in args.relay_option)
    print(f"Command: `python {' '.join(sys.argv)}`")
    print(f"Machine: {machine()}; {load_average()} at start")
    print(f"Versions: {versions(PACKAGES)}")
    started = time.perf_counter()
    async with throwaway_postgres("aiosignals_scale_bench") as url, Database(url) as db:
        await db.create_all(Base.metadata)
        print(f"Database: {await describe(db)}")
        print()
        if "latency" in sections:
            await section_latency(db, url, args.quick)
        if "slow" in sections:
            await section_slow(db, url, options, 3 if args.quick else 5)
        if "kill" in sections:
            await section_kill(db, url, args.quick)
    print(f"Total time: {time.perf_counter() - started:.1f} s; {load_average()} at end")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--quick", action="store_true", help="fewer latency samples")
    parser.add_argument("--only", default="latency,slow,kill", help="sections to run")
    parser.add_argument(
        "--relay-option", action="append", default=[], metavar="NAME=VALUE",
        help="an OutboxRelay option for the relays of section 2 (repeatable)",
    )  # fmt: skip
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(worker(args.worker[0], json.loads(args.worker[1])))
    else:
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
