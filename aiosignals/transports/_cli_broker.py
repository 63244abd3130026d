"""``aiosignals consume --broker URL``: a :class:`FastStreamConsumer` until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._signal import Signal

__all__ = ["consume"]


def consume(args: argparse.Namespace, signals: list[Signal[Any]]) -> int:
    """
    Consume *signals* through the broker of ``args.broker`` until SIGINT or SIGTERM.

    :return: 0 after a clean stop, 2 on a bad URL or option, 1 if the broker cannot do what
        a message needs (a failed send on Kafka)
    """
    import asyncio

    from ..exceptions import UnsupportedByBroker
    from ._faststream import FastStreamTransport

    if args.batch_ack:
        print("aiosignals consume: --batch-ack works with --redis only", file=sys.stderr)
        return 2
    try:
        transport = FastStreamTransport.from_url(
            args.broker,
            prefix="aiosignals." if args.prefix is None else args.prefix,
            group=args.group,
        )
    except (ValueError, TypeError) as exc:
        print(f"aiosignals consume: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_consume(args, transport, signals))
    except UnsupportedByBroker as exc:
        print(f"aiosignals consume: {exc}", file=sys.stderr, flush=True)
        return 1


async def _consume(args: argparse.Namespace, transport: Any, signals: list[Signal[Any]]) -> int:
    import asyncio
    import signal as os_signal
    from urllib.parse import urlsplit

    async with transport:
        consumer = transport.consumer(
            signals,
            consumer=args.consumer,
            claim_idle=args.claim_idle,
            max_deliveries=args.max_deliveries,
            **({} if args.count is None else {"count": args.count}),
        )
        loop = asyncio.get_running_loop()
        stops = (os_signal.SIGINT, os_signal.SIGTERM)
        for signum in stops:
            loop.add_signal_handler(signum, consumer.stop)
        where = urlsplit(str(args.broker))
        names = ", ".join(signal.name or "" for signal in signals)
        print(
            f"aiosignals consume: {names} from {transport.adapter.kind} at"
            f" {where.hostname}:{where.port} as {consumer.group}/{consumer.name};"
            " SIGINT or SIGTERM stops",
            file=sys.stderr,
            flush=True,
        )
        try:
            await consumer.run()
        finally:
            for signum in stops:
                loop.remove_signal_handler(signum)
        print(
            f"aiosignals consume: stopped; {consumer.handled} handled,"
            f" {consumer.dead} dead-lettered",
            file=sys.stderr,
            flush=True,
        )
    return 0
