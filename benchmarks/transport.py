"""
Throughput of the Redis Streams transport, from publish to receiver done.

Run ``python benchmarks/transport.py`` with ``AIOSIGNALS_TEST_REDIS_URL`` set, or pass
``--redis URL``. For one and then two consumer processes (``--consumers 1 2``), it starts
the consumers (``Subscriber`` with a no-op async receiver), waits until they are reading,
then publishes ``--events`` sends with ``RedisStreamTransport.publish`` from
``--publishers`` concurrent tasks, and stops the clock when every entry has been handled
and acknowledged (the group's ``entries-read`` is the total and nothing is pending).
Acknowledgement comes after the receivers, so that is "receiver done" for every event.

With ``--pipelined`` the entries are written with pipelined ``XADD`` (1,000 per round trip)
instead, far faster than consumers handle them: the figures are then the consumers' capacity.

Each configuration runs ``--rounds`` times on fresh streams; the best and median rates
are printed. The figures include the publishing: consumers run while the publisher does.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import time
import uuid
from pathlib import Path

from aiosignals import Event, Signal
from aiosignals.transports import RedisStreamTransport

ROOT = Path(__file__).resolve().parents[1]
GROUP = "bench"


class Tick(Event):
    n: int


tick = Signal(Tick, name="tick")


@tick.connect
async def done(sender: object, payload: Tick) -> None:
    """The receiver: does nothing, so the figures are the transport's own cost."""


async def consume(url: str, prefix: str, name: str, count: int, batch_ack: bool) -> None:
    async with RedisStreamTransport(url, stream_prefix=prefix, group=GROUP) as transport:
        subscriber = transport.consumer(
            [tick], consumer=name, count=count, block=1.0, batch_ack=batch_ack
        )
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, subscriber.stop)
        await subscriber.run()


async def wait_readers(transport: RedisStreamTransport, names: set[str]) -> None:
    stream = transport.stream_name(tick)
    while True:
        try:
            consumers = await transport.client.xinfo_consumers(stream, GROUP)
        except Exception:
            consumers = []  # No group yet.
        if {c["name"].decode() for c in consumers} >= names:
            return
        await asyncio.sleep(0.02)


async def one_round(
    args: argparse.Namespace, consumers: int, batch_ack: bool
) -> tuple[float, float]:
    """Return (publish rate, end-to-end rate) in events per second."""
    prefix = f"bench{uuid.uuid4().hex[:8]}:"
    names = [f"c{i}" for i in range(consumers)]
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--redis", args.redis, "--role", "consumer",
            "--prefix", prefix, "--name", name, "--count", str(args.count),
            *(["--batch-ack"] if batch_ack else []),
            cwd=ROOT,
        )
        for name in names
    ]  # fmt: skip
    events = args.events
    async with RedisStreamTransport(args.redis, stream_prefix=prefix, group=GROUP) as transport:
        stream = transport.stream_name(tick)
        try:
            await wait_readers(transport, set(names))
            payloads = [Tick(n=n) for n in range(events)]

            async def publish(chunk: list[Tick]) -> None:
                for payload in chunk:
                    await transport.publish(tick, None, payload)

            started = time.perf_counter()
            if args.pipelined:
                # The consumers' capacity: entries arrive faster than they can be handled.
                for i in range(0, events, 1000):
                    async with transport.client.pipeline(transaction=False) as pipe:
                        for payload in payloads[i : i + 1000]:
                            pipe.xadd(stream, {"payload": payload.model_dump_json(), "sender": ""})
                        await pipe.execute()
            else:
                async with asyncio.TaskGroup() as group:
                    for i in range(args.publishers):
                        group.create_task(publish(payloads[i :: args.publishers]))
            published = time.perf_counter()
            while True:
                [info] = await transport.client.xinfo_groups(stream)
                if info["entries-read"] == events and info["pending"] == 0:
                    break
                await asyncio.sleep(0.002)
            finished = time.perf_counter()
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                await process.wait()
            await transport.client.delete(stream, transport.dead_letter_stream)
    return events / (published - started), events / (finished - started)


async def main(args: argparse.Namespace) -> None:
    print(
        f"redis {args.redis}, {args.events} events, "
        + ("pipelined XADDs" if args.pipelined else f"{args.publishers} publisher tasks")
        + ","
        f" count={args.count}, {args.rounds} rounds, Python {sys.version.split()[0]},"
        f" {os.cpu_count()} CPUs"
    )
    modes = (False, True) if args.batch_ack == "both" else (args.batch_ack == "yes",)
    for batch_ack in modes:
        for consumers in args.consumers:
            publish_rates, rates = [], []
            for _ in range(args.rounds):
                publish_rate, rate = await one_round(args, consumers, batch_ack)
                publish_rates.append(publish_rate)
                rates.append(rate)
            print(
                f"{consumers} consumer process(es), batch_ack={batch_ack!s:5}:"
                f" publish -> receiver done: median {statistics.median(rates):7,.0f}/s,"
                f" best {max(rates):7,.0f}/s"
                f"   (publishing alone: median {statistics.median(publish_rates):7,.0f}/s)"
            )


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--redis", default=os.environ.get("AIOSIGNALS_TEST_REDIS_URL"))
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--consumers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--publishers", type=int, default=8)
    parser.add_argument("--count", type=int, default=10, help="entries per XREADGROUP")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--pipelined",
        action="store_true",
        help="publish with pipelined XADDs (1,000 a round trip): measures the consumers alone",
    )
    parser.add_argument(
        "--batch-ack",
        nargs="?",
        const="yes",
        default="both",
        choices=["yes", "no", "both"],
        help="acknowledge per read batch (default: measure both ways)",
    )
    parser.add_argument("--role", choices=["main", "consumer"], default="main")
    parser.add_argument("--prefix")
    parser.add_argument("--name")
    args = parser.parse_args()
    if not args.redis:
        parser.error("set AIOSIGNALS_TEST_REDIS_URL or pass --redis URL")
    return args


if __name__ == "__main__":
    arguments = parse()
    if arguments.role == "consumer":
        asyncio.run(
            consume(
                arguments.redis,
                arguments.prefix,
                arguments.name,
                arguments.count,
                arguments.batch_ack == "yes",
            )
        )
    else:
        asyncio.run(main(arguments))
