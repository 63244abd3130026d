"""
Throughput of FastStreamTransport beside FastStream used directly, on RabbitMQ and NATS.

Run ``python benchmarks/brokers.py`` (brokers from ``AIOSIGNALS_TEST_RABBITMQ_URL`` and
``AIOSIGNALS_TEST_NATS_URL``, by default on their loopback ports). For each broker and each
side it starts one consumer process, waits until it is subscribed, publishes ``--events``
sends from ``--publishers`` concurrent tasks in this process, and stops the clock when the
consumer has handled the last one (it says so on its stdout): publish to handled, across
processes.

- ``aiosignals``: ``FastStreamTransport.publish`` and a ``FastStreamConsumer`` calling one
  no-op receiver of a named signal: validation, the sender label, ``current_message()``,
  acknowledgement after the receivers.
- ``faststream``: the same broker objects used directly: ``broker.publish`` of the payload's
  JSON to the same exchange and routing key (RabbitMQ) or subject and stream (NATS), and a
  plain subscriber on the same quorum queue or durable pull consumer that validates the
  payload into the same pydantic model, acknowledging after the handler
  (``AckPolicy.ACK``).

Both sides use the same topology (durable quorum queues and persistent messages on
RabbitMQ, a JetStream stream with publish acknowledgements on NATS) and the same prefetch
(``--count``). Each configuration runs ``--rounds`` times on fresh queues or streams,
interleaved; the median and best rates are printed, with the ratio of the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

from faststream import AckPolicy, Context

from aiosignals import Event, Signal
from aiosignals.transports import FastStreamTransport, broker_from_url

ROOT = Path(__file__).resolve().parents[1]
GROUP = "bench"


class Tick(Event):
    n: int


tick = Signal(Tick, name="tick")
Message = Annotated[Any, Context("message")]


async def consume(args: argparse.Namespace) -> None:
    """The consumer process: print "ready" once subscribed, "done" after the last event."""
    broker = broker_from_url(args.broker)
    transport = FastStreamTransport(broker, prefix=args.prefix, group=GROUP)
    done = asyncio.Event()
    handled = 0

    def count() -> None:
        nonlocal handled
        handled += 1
        if handled == args.events:
            done.set()

    async with transport:
        if args.side == "aiosignals":

            @tick.connect
            async def receiver(sender: object, payload: Tick) -> None:
                count()

            consumer = transport.consumer([tick], count=args.count)
            task = asyncio.create_task(consumer.run())
            while not consumer.subscribed:  # noqa: ASYNC110 -- a flag, not an event
                await asyncio.sleep(0.01)
        else:
            subscriber = plain_subscriber(transport, args.count)

            @subscriber
            async def handle(message: Message) -> None:
                Tick.model_validate_json(message.body)
                count()

            await subscriber.start()
        print("ready", flush=True)
        await done.wait()
        print("done", flush=True)
        if args.side == "aiosignals":
            consumer.stop()
            await task
        else:
            await subscriber.stop()
        await broker.stop()


def plain_subscriber(transport: FastStreamTransport, count: int) -> Any:
    """A FastStream subscriber on the very queue or durable consumer the transport uses."""
    broker, adapter, stream = transport.broker, transport.adapter, transport.stream_name(tick)
    if adapter.kind == "RabbitMQ":
        from faststream.rabbit import Channel, QueueType, RabbitQueue

        queue = RabbitQueue(
            f"{stream}.{GROUP}", queue_type=QueueType.QUORUM, durable=True, routing_key=stream
        )
        return broker.subscriber(
            queue,
            adapter.exchange,  # type: ignore[attr-defined]
            channel=Channel(prefetch_count=count),
            ack_policy=AckPolicy.ACK,
            no_reply=True,
        )
    from faststream.nats import ConsumerConfig, DeliverPolicy, JStream, PullSub

    return broker.subscriber(
        stream,
        stream=JStream(adapter.stream, declare=False),  # type: ignore[attr-defined]
        durable=f"{GROUP}_{stream}".replace(".", "_"),
        pull_sub=PullSub(batch_size=count, timeout=1.0),
        config=ConsumerConfig(ack_wait=30, deliver_policy=DeliverPolicy.ALL),
        ack_policy=AckPolicy.ACK,
        no_reply=True,
    )


async def one_round(args: argparse.Namespace, url: str, side: str) -> float:
    """Return the events per second from the first publish to the last one handled."""
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    process = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--role", "consumer", "--side", side, "--broker", url,
        "--prefix", prefix, "--events", str(args.events), "--count", str(args.count),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    transport = FastStreamTransport(broker_from_url(url), prefix=prefix, group=GROUP)
    async with transport:
        try:
            stream = transport.stream_name(tick)
            await transport.adapter.prepare(stream, GROUP)
            assert await process.stdout.readline() == b"ready\n"
            payloads = [Tick(n=n) for n in range(args.events)]
            publish = _publisher(transport, side, stream)
            started = time.perf_counter()
            async with asyncio.TaskGroup() as group:
                for i in range(args.publishers):
                    group.create_task(publish(payloads[i :: args.publishers]))
            assert await process.stdout.readline() == b"done\n"
            finished = time.perf_counter()
            await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            await _remove(transport, prefix)
        await transport.broker.stop()
    return args.events / (finished - started)


def _publisher(transport: FastStreamTransport, side: str, stream: str) -> Any:
    broker, adapter = transport.broker, transport.adapter

    async def ours(chunk: list[Tick]) -> None:
        for payload in chunk:
            await transport.publish(tick, None, payload)

    async def plain(chunk: list[Tick]) -> None:
        for payload in chunk:
            body = payload.model_dump_json().encode()
            if adapter.kind == "RabbitMQ":
                await broker.publish(
                    body,
                    exchange=adapter.exchange,  # type: ignore[attr-defined]
                    routing_key=stream,
                    persist=True,
                )
            else:
                await broker.publish(body, stream, stream=adapter.stream)  # type: ignore[attr-defined]

    return ours if side == "aiosignals" else plain


async def _remove(transport: FastStreamTransport, prefix: str) -> None:
    connection = await transport.broker.connect()
    if transport.adapter.kind == "RabbitMQ":
        channel = await connection.channel()
        await channel.queue_delete(f"{prefix}tick.{GROUP}")
        await channel.exchange_delete(prefix.rstrip("."))
        await channel.close()
    else:
        await connection.jetstream().delete_stream(prefix.rstrip("."))


async def main(args: argparse.Namespace) -> None:
    print(
        f"{args.events} events, {args.publishers} publisher tasks, 1 consumer process,"
        f" count={args.count}, {args.rounds} rounds, Python {sys.version.split()[0]},"
        f" {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
    )
    for name, url in (("RabbitMQ", args.rabbitmq), ("NATS JetStream", args.nats)):
        rates: dict[str, list[float]] = {"faststream": [], "aiosignals": []}
        for _ in range(args.rounds):
            for side in rates:  # Interleaved, so that noise falls on both alike.
                rates[side].append(await one_round(args, url, side))
        medians = {side: statistics.median(values) for side, values in rates.items()}
        for side, values in rates.items():
            print(
                f"{name:15} {side:10}: publish -> handled median {medians[side]:7,.0f}/s,"
                f" best {max(values):7,.0f}/s"
            )
        ratio = medians["faststream"] / medians["aiosignals"]
        print(f"{name:15} FastStream directly / aiosignals: {ratio:.2f}x")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--rabbitmq",
        default=os.environ.get("AIOSIGNALS_TEST_RABBITMQ_URL")
        or "amqp://guest:guest@127.0.0.1:5672/",
    )
    parser.add_argument(
        "--nats", default=os.environ.get("AIOSIGNALS_TEST_NATS_URL") or "nats://127.0.0.1:4222"
    )
    parser.add_argument("--events", type=int, default=5_000)
    parser.add_argument("--publishers", type=int, default=8)
    parser.add_argument("--count", type=int, default=50, help="prefetch / pull batch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--role", choices=["main", "consumer"], default="main")
    parser.add_argument("--side", choices=["aiosignals", "faststream"])
    parser.add_argument("--broker")
    parser.add_argument("--prefix")
    return parser.parse_args()


if __name__ == "__main__":
    import logging

    logging.disable(logging.INFO)  # FastStream logs each message: not what is measured.
    arguments = parse()
    asyncio.run(consume(arguments) if arguments.role == "consumer" else main(arguments))
