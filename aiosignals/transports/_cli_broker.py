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
    from urllib.parse import urlsplit

    from ._cli import consumer_options, serve

    async with transport:
        consumer = transport.consumer(signals, **consumer_options(args))
        where = urlsplit(str(args.broker))
        names = ", ".join(signal.name or "" for signal in signals)
        await serve(
            consumer,
            f"{names} from {transport.adapter.kind} at {where.hostname}:{where.port}"
            f" as {consumer.group}/{consumer.name}",
        )
    return 0
