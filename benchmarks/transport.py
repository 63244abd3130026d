"""
Redis Streams across processes: aiosignals against a hand-written redis-py loop, same run.

Run ``python benchmarks/transport.py`` with ``AIOSIGNALS_TEST_REDIS_URL`` set, or pass
``--redis URL``. Each round uses fresh streams, starts ``--consumers`` consumer processes,
waits until they read, then publishes ``--events`` events from this process and stops the
clock when every entry has been handled and acknowledged (the group's ``entries-read`` is
the total and nothing is pending). The rows:

- ``redis-py loop``: the floor. Publisher: pipelines of 100 ``XADD`` (one round trip each,
  one after the other). Consumer (``--role raw``): ``XREADGROUP COUNT 100`` then one
  ``XACK`` of the batch, in a loop; it decodes nothing and calls nothing.
- ``aiosignals``: publisher: ``RedisStreamTransport.publish`` awaited by ``--publishers``
  concurrent tasks, each publishing its share one after the other (the transport pipelines
  what they issue concurrently). Consumer: ``aiosignals consume`` with its defaults and a
  no-op async receiver (``--app benchmarks.transport:tick``), which validates each payload,
  sends it and acknowledges after the receiver ran.

The rows alternate round by round, so that noise from the machine falls on both alike;
each prints the median and best end-to-end rate, the publishing rate alone, and the ratio
of the medians. Nothing may be lost: a round whose handled count differs fails the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import redis.asyncio as aioredis

from aiosignals import Event, Signal
from aiosignals.transports import RedisStreamTransport

sys.path.insert(0, str(Path(__file__).resolve().parent))
# `aiosignals consume --app benchmarks.transport:tick` imports this file as a module.
from _common import load_average, machine, versions

ROOT = Path(__file__).resolve().parents[1]
GROUP = "bench"
BATCH = 100


class Tick(Event):
    n: int


tick = Signal(Tick, name="tick")


@tick.connect
async def done(sender: object, payload: Tick) -> None:
    """The receiver: does nothing, so the figures are the transport's own cost."""


async def raw_consumer(url: str, stream: str, name: str) -> None:
    """The hand-written floor: XREADGROUP COUNT 100, one XACK per batch, until SIGTERM."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    client = aioredis.Redis.from_url(url)
    try:
        with contextlib.suppress(aioredis.ResponseError):  # BUSYGROUP: another one made it.
            await client.xgroup_create(stream, GROUP, id="0", mkstream=True)
        # Redis 7.0 registers a consumer whose first XREADGROUP blocks only once it returns.
        await client.xgroup_createconsumer(stream, GROUP, name)
        while not stop.is_set():
            reply = await client.xreadgroup(GROUP, name, {stream: ">"}, count=BATCH, block=200)
            for _, entries in reply or ():
                if entries:
                    await client.xack(stream, GROUP, *(entry_id for entry_id, _ in entries))
    finally:
        await client.aclose()


async def start_consumers(
    args: argparse.Namespace, row: str, prefix: str, names: list[str]
) -> list[asyncio.subprocess.Process]:
    processes = []
    for name in names:
        if row == "raw":
            command = [__file__, "--redis", args.redis, "--role", "raw"]
            command += ["--stream", f"{prefix}tick", "--name", name]
        else:
            command = ["-m", "aiosignals", "consume", "--redis", args.redis]
            command += ["--app", "benchmarks.transport:tick", "--prefix", prefix]
            command += ["--group", GROUP, "--consumer", name]
        processes.append(
            await asyncio.create_subprocess_exec(
                sys.executable, *command, cwd=ROOT, stderr=subprocess.DEVNULL
            )
        )
    return processes


async def wait_readers(client: aioredis.Redis, stream: str, names: set[str]) -> None:
    while True:
        try:
            consumers = await client.xinfo_consumers(stream, GROUP)
        except aioredis.ResponseError:
            consumers = []  # No group yet.
        if {c["name"].decode() for c in consumers} >= names:
            return
        await asyncio.sleep(0.02)


async def publish_raw(client: aioredis.Redis, stream: str, payloads: list[Tick]) -> None:
    for i in range(0, len(payloads), BATCH):
        async with client.pipeline(transaction=False) as pipe:
            for payload in payloads[i : i + BATCH]:
                pipe.xadd(stream, {"payload": payload.model_dump_json(), "sender": ""})
            await pipe.execute()


async def publish_aiosignals(
    transport: RedisStreamTransport, payloads: list[Tick], publishers: int
) -> None:
    async def publisher(share: list[Tick]) -> None:
        for payload in share:
            await transport.publish(tick, None, payload)

    async with asyncio.TaskGroup() as group:
        for i in range(publishers):
            group.create_task(publisher(payloads[i::publishers]))


async def one_round(args: argparse.Namespace, row: str, consumers: int) -> tuple[float, float]:
    """Return (publish rate, end-to-end rate) in events per second."""
    prefix = f"bench{uuid.uuid4().hex[:8]}:"
    names = [f"c{i}" for i in range(consumers)]
    processes = await start_consumers(args, row, prefix, names)
    events = args.events
    async with RedisStreamTransport(args.redis, stream_prefix=prefix, group=GROUP) as transport:
        client = transport.client
        stream = transport.stream_name(tick)
        try:
            await wait_readers(client, stream, set(names))
            payloads = [Tick(n=n) for n in range(events)]
            started = time.perf_counter()
            if row == "raw":
                await publish_raw(client, stream, payloads)
            else:
                await publish_aiosignals(transport, payloads, args.publishers)
            published = time.perf_counter()
            deadline = published + 120
            while True:
                [info] = await client.xinfo_groups(stream)
                if info["entries-read"] >= events and info["pending"] == 0:
                    break
                if time.perf_counter() > deadline:
                    raise SystemExit(f"{row}: not all handled: {info}")
                await asyncio.sleep(0.002)
            finished = time.perf_counter()
            length = await client.xlen(stream)
            if length != events or info["entries-read"] != events:
                raise SystemExit(f"{row}: {length} entries, {info['entries-read']} read")
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                await process.wait()
            await client.delete(stream, transport.dead_letter_stream)
    return events / (published - started), events / (finished - started)


ROWS = {"raw": "redis-py loop", "aiosignals": "aiosignals   "}


async def main(args: argparse.Namespace) -> None:
    print(machine())
    print(versions(["redis", "hiredis", "anyio", "pydantic"]))
    print(
        f"redis {args.redis}; {args.events} events a round, {args.rounds} rounds a row;"
        f" aiosignals publishers: {args.publishers} tasks; {load_average()}"
    )
    for consumers in args.consumers:
        rates: dict[str, list[float]] = {row: [] for row in ROWS}
        publish: dict[str, list[float]] = {row: [] for row in ROWS}
        for _ in range(args.rounds):
            for row in ROWS:
                publish_rate, rate = await one_round(args, row, consumers)
                publish[row].append(publish_rate)
                rates[row].append(rate)
        for row, label in ROWS.items():
            print(
                f"{consumers} consumer process(es), {label}: publish -> handled and acked:"
                f" median {statistics.median(rates[row]):7,.0f}/s,"
                f" best {max(rates[row]):7,.0f}/s"
                f"   (publishing alone: median {statistics.median(publish[row]):7,.0f}/s)"
            )
        ratio = statistics.median(rates["aiosignals"]) / statistics.median(rates["raw"])
        print(f"{consumers} consumer process(es): aiosignals / redis-py loop = {ratio:.2f}x")
    print(load_average())


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--redis", default=os.environ.get("AIOSIGNALS_TEST_REDIS_URL"))
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--consumers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--publishers", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--role", choices=["main", "raw"], default="main")
    parser.add_argument("--stream")
    parser.add_argument("--name")
    args = parser.parse_args()
    if not args.redis:
        parser.error("set AIOSIGNALS_TEST_REDIS_URL or pass --redis URL")
    return args


if __name__ == "__main__":
    arguments = parse()
    if arguments.role == "raw":
        asyncio.run(raw_consumer(arguments.redis, arguments.stream, arguments.name))
    else:
        asyncio.run(main(arguments))
