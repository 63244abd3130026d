"""
Dispatch cost of aiosignals against bare-asyncio floors and peer libraries.

Run ``python benchmarks/dispatch.py`` (a few minutes) or ``--quick`` (about a minute);
``--json PATH`` also writes the figures as JSON. Everything runs in one process, on one
asyncio event loop: every (contender, N) cell is calibrated and warmed up, then the cells
are timed in interleaved rounds (round-robin, the starting cell rotating each round) so
that machine noise hits all of them alike. Each timing is one batch of sends measured
with ``time.perf_counter_ns`` while the garbage collector is disabled; a cell's figure is
the median over its rounds of the batch time divided by the batch size.

See benchmarks/README.md for what each row means.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from _common import machine, versions

from aiosignals import Concurrent, Event, Sequential, Signal

PACKAGES = ["aiosignals", "pydantic", "anyio", "aiosignal", "blinker", "django", "pyee", "bubus"]
"""The distributions whose versions the report names."""

SIZES = (0, 1, 10, 100)
RETRIES = 3  # timings of a batch, at most, until one runs without losing the CPU
SEQ = "sequential"
CONC = "concurrent"
TIMES = "\N{MULTIPLICATION SIGN}"


class Payload(Event):
    """The payload every contender delivers (bubus builds its own event type)."""

    value: int


SENDER = object()
PAYLOAD = Payload(value=1)

# A batch runner: run k sends, return the elapsed wall-clock and CPU nanoseconds.
Batch = Callable[[int], Awaitable[tuple[int, int]]]


def make_receivers(n: int) -> list[Callable[[Any, Any], Awaitable[None]]]:
    """Return *n* distinct no-op async receivers taking ``(sender, payload)``."""

    def make() -> Callable[[Any, Any], Awaitable[None]]:
        async def receiver(sender: Any, payload: Any) -> None:
            return None

        return receiver

    return [make() for _ in range(n)]


def timed(sends: Callable[[int], Awaitable[None]]) -> Batch:
    """Wrap a k-sends loop into a batch runner timed with the collector disabled."""

    async def batch(k: int) -> tuple[int, int]:
        gc.disable()
        try:
            cpu = time.process_time_ns()
            start = time.perf_counter_ns()
            await sends(k)
            wall = time.perf_counter_ns() - start
            return wall, time.process_time_ns() - cpu
        finally:
            gc.enable()

    return batch


# -- contenders -----------------------------------------------------------------------
# Each setup builds its signal with n receivers and returns (batch runner, teardown).
# The send loop is written out in each so no extra call per send distorts the figures.

Teardown = Callable[[], Awaitable[None]] | None


async def setup_bare_loop(n: int) -> tuple[Batch, Teardown]:
    receivers = make_receivers(n)

    async def sends(k: int) -> None:
        sender, payload = SENDER, PAYLOAD
        for _ in range(k):
            for r in receivers:
                await r(sender, payload)

    return timed(sends), None


async def setup_taskgroup(n: int) -> tuple[Batch, Teardown]:
    receivers = make_receivers(n)

    async def sends(k: int) -> None:
        sender, payload = SENDER, PAYLOAD
        for _ in range(k):
            async with asyncio.TaskGroup() as tg:
                for r in receivers:
                    tg.create_task(r(sender, payload))

    return timed(sends), None


async def setup_gather(n: int) -> tuple[Batch, Teardown]:
    receivers = make_receivers(n)

    async def sends(k: int) -> None:
        sender, payload = SENDER, PAYLOAD
        for _ in range(k):
            await asyncio.gather(*[r(sender, payload) for r in receivers])

    return timed(sends), None


def aiosignals_setup(mode: Sequential | Concurrent, *, fields: bool) -> Callable[..., Any]:
    async def setup(n: int) -> tuple[Batch, Teardown]:
        sig = Signal(Payload, mode=mode)
        for r in make_receivers(n):
            sig.connect(r)
        send = sig.send

        if fields:

            async def sends(k: int) -> None:
                sender = SENDER
                for _ in range(k):
                    await send(sender, value=1)

        else:

            async def sends(k: int) -> None:
                sender, payload = SENDER, PAYLOAD
                for _ in range(k):
                    await send(sender, payload)

        return timed(sends), None

    return setup


async def setup_aiosignal(n: int) -> tuple[Batch, Teardown]:
    import aiosignal

    sig: Any = aiosignal.Signal(owner=SENDER)
    for r in make_receivers(n):
        sig.append(r)
    sig.freeze()
    send = sig.send

    async def sends(k: int) -> None:
        sender, payload = SENDER, PAYLOAD
        for _ in range(k):
            await send(sender, payload)

    return timed(sends), None


async def setup_blinker(n: int) -> tuple[Batch, Teardown]:
    import blinker

    sig = blinker.Signal()
    for r in make_receivers(n):
        sig.connect(r, weak=False)
    send = sig.send_async

    async def sends(k: int) -> None:
        sender, payload = SENDER, PAYLOAD
        for _ in range(k):
            await send(sender, payload=payload)

    return timed(sends), None


def configure_django() -> None:
    from django.conf import settings

    if not settings.configured:
        settings.configure()


async def setup_django(n: int) -> tuple[Batch, Teardown]:
    configure_django()
    from django.dispatch import Signal as DjangoSignal

    def make() -> Callable[..., Awaitable[None]]:
        # Django calls receivers with keywords (signal=, sender=, **named), and its
        # documented receiver signature takes **kwargs.
        async def receiver(sender: Any, **kwargs: Any) -> None:
            return None

        return receiver

    sig = DjangoSignal()
    for _ in range(n):
        sig.connect(make(), weak=False)
    send = sig.asend

    async def sends(k: int) -> None:
        sender, payload = SENDER, PAYLOAD
        for _ in range(k):
            await send(sender, payload=payload)

    return timed(sends), None


async def setup_pyee(n: int) -> tuple[Batch, Teardown]:
    from pyee.asyncio import AsyncIOEventEmitter

    ee = AsyncIOEventEmitter()
    for r in make_receivers(n):
        ee.add_listener("send", r)
    emit, wait = ee.emit, ee.wait_for_complete

    async def sends(k: int) -> None:
        sender, payload = SENDER, PAYLOAD
        for _ in range(k):
            # emit() schedules each coroutine handler as a future and returns at once;
            # wait_for_complete() waits for those futures, i.e. for the handlers to run.
            emit("send", sender, payload)
            await wait()

    return timed(sends), None


async def setup_anyio(n: int) -> tuple[Batch, Teardown]:
    import anyio

    receivers = make_receivers(n)

    async def sends(k: int) -> None:
        sender, payload = SENDER, PAYLOAD
        for _ in range(k):
            async with anyio.create_task_group() as tg:
                for r in receivers:
                    tg.start_soon(r, sender, payload)

    return timed(sends), None


_bubus_buses = 0
BUBUS_WARMUP = 55  # dispatches: fills a bus's history (max_history_size=50)


def bubus_setup(*, parallel: bool) -> Callable[..., Any]:
    async def setup(n: int) -> tuple[Batch, Teardown]:
        from bubus import BaseEvent, EventBus

        class BubusPayload(BaseEvent[None]):
            value: int

        def make(i: int) -> Callable[[Any], Awaitable[None]]:
            async def handler(event: Any) -> None:
                return None

            # bubus warns about two handlers of the same name on one event type.
            handler.__name__ = handler.__qualname__ = f"handler_{i}"
            return handler

        global _bubus_buses
        _bubus_buses += 1
        bus = EventBus(name=f"bench_{_bubus_buses}", parallel_handlers=parallel)
        for i in range(n):
            bus.on(BubusPayload, make(i))
        dispatch = bus.dispatch

        async def sends(k: int) -> None:
            for _ in range(k):
                # A bubus event is dispatched once: each send builds a new one. Awaiting
                # the dispatched event waits until every handler has completed.
                await dispatch(BubusPayload(value=1))

        async def teardown() -> None:
            await bus.stop(clear=True)

        return timed(sends), teardown

    return setup


@dataclass
class Contender:
    name: str
    mode: str  # SEQ or CONC
    setup: Callable[[int], Awaitable[tuple[Batch, Teardown]]]
    floor: bool = False
    slow: bool = False  # timed in fewer rounds
    error: str | None = None


CONTENDERS = [
    Contender("floor: bare loop `for r: await r(...)`", SEQ, setup_bare_loop, floor=True),
    Contender("floor: asyncio.TaskGroup, a task per receiver", CONC, setup_taskgroup, floor=True),
    Contender("floor: asyncio.gather", CONC, setup_gather, floor=True),
    Contender(
        "aiosignals Sequential, prebuilt payload",
        SEQ,
        aiosignals_setup(Sequential(), fields=False),
    ),
    Contender(
        "aiosignals Sequential, payload from fields",
        SEQ,
        aiosignals_setup(Sequential(), fields=True),
    ),
    Contender(
        "aiosignals Concurrent, prebuilt payload",
        CONC,
        aiosignals_setup(Concurrent(), fields=False),
    ),
    Contender(
        "aiosignals Concurrent, payload from fields",
        CONC,
        aiosignals_setup(Concurrent(), fields=True),
    ),
    Contender("aiosignal (aio-libs) Signal.send", SEQ, setup_aiosignal),
    Contender("blinker Signal.send_async", SEQ, setup_blinker),
    Contender(
        "bubus EventBus.dispatch (serial handlers)", SEQ, bubus_setup(parallel=False), slow=True
    ),
    Contender("django Signal.asend", CONC, setup_django),
    Contender("pyee AsyncIOEventEmitter.emit + wait", CONC, setup_pyee),
    Contender("anyio task group, start_soon per receiver", CONC, setup_anyio),
    Contender(
        "bubus EventBus.dispatch (parallel_handlers)", CONC, bubus_setup(parallel=True), slow=True
    ),
]
SEQ_FLOOR = CONTENDERS[0]
CONC_FLOOR = CONTENDERS[1]


@dataclass
class Cell:
    contender: Contender
    n: int
    batch: Batch
    teardown: Teardown
    k: int = 1
    samples: list[float] = field(default_factory=list)  # ns per send
    descheduled: int = 0  # batches discarded because the process lost the CPU

    @property
    def median_us(self) -> float:
        return statistics.median(self.samples) / 1000


async def calibrate(cell: Cell, target_ns: int) -> None:
    """Warm the cell up and pick a batch size that takes about *target_ns*."""
    await cell.batch(1)  # first use: lazy imports, caches
    k, (elapsed, _) = 1, await cell.batch(1)
    while elapsed < target_ns // 4 and k < 1 << 22:
        k *= 4
        elapsed, _ = await cell.batch(k)
    k = max(1, round(k * target_ns / max(elapsed, 1)))
    # Re-estimate once at the chosen size, which also warms it up.
    elapsed, _ = await cell.batch(k)
    cell.k = max(1, round(k * target_ns / max(elapsed, 1)))


async def build_cells(
    contenders: list[Contender], target_ns: int, warmup_sends: int = 0
) -> list[Cell]:
    """Set up and calibrate every (contender, N) cell; a contender that fails is skipped."""
    cells: list[Cell] = []
    for contender in contenders:
        mine: list[Cell] = []
        try:
            for n in SIZES:
                batch, teardown = await contender.setup(n)
                cell = Cell(contender, n, batch, teardown)
                mine.append(cell)
                if warmup_sends:
                    await cell.batch(warmup_sends)
                await calibrate(cell, target_ns)
        except Exception as exc:
            contender.error = f"{type(exc).__name__}: {exc}"
            await teardown_cells(mine)
            continue
        cells.extend(mine)
    return cells


async def teardown_cells(cells: list[Cell]) -> None:
    for cell in cells:
        if cell.teardown is not None:
            await cell.teardown()
    await asyncio.sleep(0)  # let cancelled background tasks finish


async def run_rounds(cells: list[Cell], rounds: int, retries: int = RETRIES) -> None:
    """Time every cell once per round, the starting cell rotating from round to round."""
    for round_no in range(rounds):
        shift = round_no % len(cells)
        for cell in cells[shift:] + cells[:shift]:
            for _ in range(retries):
                elapsed, cpu = await cell.batch(cell.k)
                # Nothing here waits on I/O: a batch whose wall time exceeds its CPU time
                # lost the CPU to another process, and is timed again.
                if elapsed <= cpu * 1.05 + 100_000:
                    break
                cell.descheduled += 1
            cell.samples.append(elapsed / cell.k)


async def run_dispatch(rounds: int, slow_rounds: int, target_ns: int, quick: bool) -> list[Cell]:
    fast = [c for c in CONTENDERS if not c.slow]
    slow = [c for c in CONTENDERS if c.slow]
    cells = await build_cells(fast, target_ns)
    await run_rounds(cells, rounds)
    await teardown_cells(cells)
    # The slow contenders (bubus) run apart: their buses keep background tasks on the loop
    # that would slow down every other contender's awaits. A bus gets slower as its event
    # history fills up to its 50-event cap, so the full run first brings each bus there.
    slow_cells = await build_cells(slow, target_ns, warmup_sends=0 if quick else BUBUS_WARMUP)
    # bubus waits on timers of its own (wall > CPU time is normal for it): no re-timing.
    await run_rounds(slow_cells, slow_rounds, retries=1)
    await teardown_cells(slow_cells)
    return cells + slow_cells


# -- memory ---------------------------------------------------------------------------


def make_closures(n: int) -> list[Callable[[Any, Any], Awaitable[int]]]:
    """Return *n* distinct async closures, each over its own index."""

    def make(i: int) -> Callable[[Any, Any], Awaitable[int]]:
        async def receiver(sender: Any, payload: Any) -> int:
            return i

        return receiver

    return [make(i) for i in range(n)]


async def connect_aiosignals(fns: list[Any]) -> Any:
    sig = Signal(Payload)
    for fn in fns:
        sig.connect(fn)
    await sig.send(SENDER, PAYLOAD)  # builds the cached receiver plan
    return sig


async def connect_blinker(fns: list[Any]) -> Any:
    import blinker

    sig = blinker.Signal()
    for fn in fns:
        sig.connect(fn, weak=False)
    await sig.send_async(SENDER, payload=PAYLOAD)
    return sig


async def connect_aiosignal(fns: list[Any]) -> Any:
    import aiosignal

    sig: Any = aiosignal.Signal(owner=SENDER)
    for fn in fns:
        sig.append(fn)
    sig.freeze()
    await sig.send(SENDER, PAYLOAD)
    return sig


async def receivers_memory(count: int) -> dict[str, Any]:
    """Peak and retained traced memory of *count* receivers connected to one signal."""
    out: dict[str, Any] = {"receivers": count}
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        fns = make_closures(count)
        out["closures_bytes"] = tracemalloc.get_traced_memory()[0] - before
        libs = {
            "aiosignals": connect_aiosignals,
            "blinker": connect_blinker,
            "aiosignal": connect_aiosignal,
        }
        for name, connect in libs.items():
            gc.collect()
            base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            try:
                sig = await connect(fns)
            except Exception as exc:
                out[name] = {"error": f"{type(exc).__name__}: {exc}"}
                continue
            gc.collect()
            current, peak = tracemalloc.get_traced_memory()
            out[name] = {"peak_bytes": peak - base, "retained_bytes": current - base}
            del sig
    finally:
        tracemalloc.stop()
    return out


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def send_growth(sends: int) -> list[dict[str, Any]]:
    """Memory growth over many sends: traced (Python objects) and RSS."""
    results = []
    cases = [
        ("aiosignals Sequential, 1 receiver, payload from fields", Sequential(), 1, True, sends),
        (
            "aiosignals Concurrent, 10 receivers, prebuilt payload",
            Concurrent(),
            10,
            False,
            sends // 50,  # ~40 µs a send, ~300 µs under tracemalloc
        ),
    ]
    for label, mode, n, fields, count in cases:
        sig = Signal(Payload, mode=mode)
        for r in make_receivers(n):
            sig.connect(r)
        for _ in range(1000):  # warm-up: caches, free lists
            await sig.send(SENDER, PAYLOAD)
        gc.collect()
        rss_before = rss_bytes()
        tracemalloc.start()
        traced_before = tracemalloc.get_traced_memory()[0]
        start = time.perf_counter()
        if fields:
            for i in range(count):
                await sig.send(SENDER, value=i)
        else:
            for _ in range(count):
                await sig.send(SENDER, PAYLOAD)
        seconds = time.perf_counter() - start
        gc.collect()
        traced_after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        results.append(
            {
                "case": label,
                "sends": count,
                "traced_growth_bytes": traced_after - traced_before,
                "rss_growth_bytes": rss_bytes() - rss_before,
                "seconds_traced": seconds,
            }
        )
    return results


# -- payload validation ---------------------------------------------------------------


def micro(stmt: Callable[[int], None], k: int, rounds: int) -> float:
    """Median ns per iteration of ``stmt(k)`` (a k-iteration loop), collector disabled."""
    samples = []
    for _ in range(rounds):
        gc.disable()
        try:
            start = time.perf_counter_ns()
            stmt(k)
            samples.append((time.perf_counter_ns() - start) / k)
        finally:
            gc.enable()
    return statistics.median(samples)


def validation_costs(k: int, rounds: int) -> dict[str, float]:
    payload, payload_type, data = PAYLOAD, Payload, {"value": 1}
    validate = Payload.model_validate

    def empty(k: int) -> None:
        for _ in range(k):
            pass

    def construct(k: int) -> None:
        for _ in range(k):
            payload_type(value=1)

    def model_validate(k: int) -> None:
        for _ in range(k):
            validate(data)

    def class_check(k: int) -> None:
        for _ in range(k):
            payload.__class__ is payload_type  # noqa: B015 -- the expression is what we time

    def type_check(k: int) -> None:
        for _ in range(k):
            type(payload) is payload_type  # noqa: B015 -- the expression is what we time

    costs = {}
    for name, fn in [
        ("empty loop", empty),
        ("Payload(value=1)", construct),
        ('Payload.model_validate({"value": 1})', model_validate),
        ("payload.__class__ is payload_type", class_check),
        ("type(payload) is payload_type (what send() does)", type_check),
    ]:
        fn(min(k, 10_000))  # warm-up
        costs[name] = micro(fn, k, rounds)
    return costs


# -- report ---------------------------------------------------------------------------


def load_average() -> str:
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg()) + " (1, 5, 15 min)"
    except OSError:
        return "unknown"


def fmt_bytes(value: int) -> str:
    return f"{value / 1_000_000:.2f} MB"


def dispatch_table(cells: list[Cell]) -> tuple[str, dict[str, Any]]:
    by_key = {(cell.contender.name, cell.n): cell for cell in cells}
    lines = [
        "| contender | mode | " + " | ".join(f"N={n}" for n in SIZES) + " |",
        "|---|---|" + "---:|" * len(SIZES),
    ]
    data: dict[str, Any] = {}
    for contender in CONTENDERS:
        if contender.error is not None:
            continue
        floor = SEQ_FLOOR if contender.mode == SEQ else CONC_FLOOR
        row = []
        data[contender.name] = {"mode": contender.mode, "cells": {}}
        for n in SIZES:
            cell, base = by_key.get((contender.name, n)), by_key.get((floor.name, n))
            if cell is None or base is None:
                row.append("n/a")
                continue
            ratio = cell.median_us / base.median_us
            row.append(f"{cell.median_us:.2f} µs ({ratio:.2f}{TIMES})")
            data[contender.name]["cells"][str(n)] = {
                "median_us": cell.median_us,
                "ratio_to_floor": ratio,
                "rounds": len(cell.samples),
                "batch": cell.k,
            }
        lines.append(f"| {contender.name} | {contender.mode} | " + " | ".join(row) + " |")
    return "\n".join(lines), data


def check_targets(cells: list[Cell], memory: dict[str, Any]) -> list[tuple[str, bool | None, str]]:
    def us(name: str, n: int) -> float | None:
        for cell in cells:
            if cell.contender.name == name and cell.n == n:
                return cell.median_us
        return None

    seq, conc = "aiosignals Sequential, prebuilt payload", "aiosignals Concurrent, prebuilt payload"
    checks: list[tuple[str, bool | None, str]] = []

    def ratio_check(label: str, name: str, floor: str, n: int, limit: float) -> None:
        mine, base = us(name, n), us(floor, n)
        if mine is None or base is None:
            checks.append((label, None, "not measured"))
            return
        ratio = mine / base
        checks.append((label, ratio <= limit, f"{ratio:.2f}{TIMES}"))

    ratio_check(
        f"Sequential prebuilt, N=1: within 4{TIMES} of bare loop", seq, SEQ_FLOOR.name, 1, 4.0
    )
    ratio_check(
        f"Sequential prebuilt, N=10: within 2.0{TIMES} of bare loop", seq, SEQ_FLOOR.name, 10, 2.0
    )
    ratio_check(
        f"Sequential prebuilt, N=100: within 1.8{TIMES} of bare loop", seq, SEQ_FLOOR.name, 100, 1.8
    )
    for n in (10, 100):
        mine, peer = us(seq, n), us("aiosignal (aio-libs) Signal.send", n)
        if mine is None or peer is None:
            checks.append((f"Sequential prebuilt faster than aiosignal, N={n}", None, "n/a"))
        else:
            checks.append(
                (
                    f"Sequential prebuilt faster than aiosignal, N={n}",
                    mine < peer,
                    f"{mine:.2f} vs {peer:.2f} µs",
                )
            )
    for n in (10, 100):
        ratio_check(
            f"Concurrent prebuilt, N={n}: within 1.1{TIMES} of asyncio.TaskGroup",
            conc,
            CONC_FLOOR.name,
            n,
            1.1,
        )
    mine_mem = memory.get("aiosignals", {}).get("peak_bytes")
    if mine_mem is None:
        checks.append(("10,000 receivers < 10 MB", None, "not measured"))
    else:
        total = mine_mem + memory["closures_bytes"]
        checks.append(
            (
                "10,000 receivers < 10 MB",
                total < 10_000_000,
                f"{fmt_bytes(total)} peak incl. the closures themselves",
            )
        )
    return checks


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    rounds, slow_rounds, target_ns = (7, 2, 3_000_000) if quick else (31, 3, 10_000_000)
    growth_sends = 100_000 if quick else 1_000_000

    command = "python " + " ".join([sys.argv[0], *sys.argv[1:]])
    machine_line = machine()
    print(f"Command: `{command}`")
    print(f"Machine: {machine_line}")
    print(f"Versions: {versions(PACKAGES)}")
    print(f"Load average at start: {load_average()}")
    print(
        f"Method: {rounds} interleaved rounds per cell ({slow_rounds} for bubus), batches of"
        f" ~{target_ns / 1e6:g} ms, median µs per send; gc disabled while timing;"
        " ratio to the floor of the same mode and N."
    )
    if quick:
        print("bubus: fresh buses (--quick); a bus with a full event history is slower.")
    else:
        print(
            f"bubus: timed apart, each bus first given {BUBUS_WARMUP} dispatches to fill its"
            " 50-event history (its steady state)."
        )
    print()

    started = time.perf_counter()
    cells = await run_dispatch(rounds, slow_rounds, target_ns, quick)
    table, table_data = dispatch_table(cells)
    print("## Dispatch: median µs per send (ratio to floor)")
    print()
    print(table)
    print()
    print(
        "Sequential rows are compared with the bare loop, concurrent rows with"
        " asyncio.TaskGroup (same N)."
    )
    retimed = sum(cell.descheduled for cell in cells)
    timed_batches = sum(len(cell.samples) for cell in cells)
    print(
        f"Batches timed again because the process lost the CPU (wall > CPU time):"
        f" {retimed} (for {timed_batches} kept)."
    )
    for contender in CONTENDERS:
        if contender.error is not None:
            print(f"{contender.name}: could not run: {contender.error}")
    print()

    memory = await receivers_memory(10_000)
    print("## Memory: 10,000 distinct async closures connected strongly to one signal")
    print()
    print(f"The 10,000 closures themselves: {fmt_bytes(memory['closures_bytes'])}.")
    print()
    print("| library | peak during connect + one send | retained after |")
    print("|---|---:|---:|")
    for name in ("aiosignals", "blinker", "aiosignal"):
        entry = memory[name]
        if "error" in entry:
            print(f"| {name} | could not run: {entry['error']} | |")
        else:
            print(
                f"| {name} | {fmt_bytes(entry['peak_bytes'])} |"
                f" {fmt_bytes(entry['retained_bytes'])} |"
            )
    print()

    growth = await send_growth(growth_sends)
    print("## Memory growth over many sends (gc.collect() before and after)")
    print()
    print("| case | sends | traced growth | RSS growth |")
    print("|---|---:|---:|---:|")
    for entry in growth:
        print(
            f"| {entry['case']} | {entry['sends']:,} | {entry['traced_growth_bytes']:,} B |"
            f" {entry['rss_growth_bytes'] / 1024:,.0f} KiB |"
        )
    print()

    costs = validation_costs(100_000 if quick else 300_000, 5 if quick else 11)
    baseline = costs["empty loop"]
    print("## Payload checks, per operation")
    print()
    print("| operation | µs | µs net of loop overhead |")
    print("|---|---:|---:|")
    for name, ns in costs.items():
        net = "" if name == "empty loop" else f"{(ns - baseline) / 1000:.4f}"
        print(f"| {name} | {ns / 1000:.4f} | {net} |")
    print()

    checks = check_targets(cells, memory)
    print("## Targets")
    print()
    for label, ok, detail in checks:
        mark = "n/a" if ok is None else ("met" if ok else "MISSED")
        print(f"- {label}: {mark} ({detail})")
    print()
    print(f"Load average at the end: {load_average()}")
    print(f"Total time: {time.perf_counter() - started:.0f} s")

    return {
        "command": command,
        "machine": machine_line,
        "versions": versions(PACKAGES),
        "rounds": rounds,
        "batches_retimed": sum(cell.descheduled for cell in cells),
        "dispatch": table_data,
        "errors": {c.name: c.error for c in CONTENDERS if c.error is not None},
        "receivers_memory": memory,
        "send_growth": growth,
        "payload_checks_ns": costs,
        "targets": [{"target": t, "met": ok, "detail": d} for t, ok, d in checks],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--quick", action="store_true", help="a short run (about a minute)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON here")
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=2)
            out.write("\n")


if __name__ == "__main__":
    main()
