"""
``aiosignals consume``: run a consumer until SIGINT or SIGTERM.

``--redis URL`` reads Redis Streams (:class:`RedisStreamTransport`); ``--broker URL`` reads
through a FastStream broker chosen by the URL (:class:`FastStreamTransport`).

``--app module:attr`` names what to consume: a :class:`~aiosignals.Signal`, a list or tuple
of signals, or a module (``module`` alone, or ``module:attr`` naming a module), in which
case every named signal in the module's namespace is consumed. Importing it also connects
the receivers defined there. The current directory is importable, as with uvicorn.

The consumer flags are made from :class:`RedisConsumerOptions`: a flag not given is left
out, so each consumer applies its own default.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from .._cli_args import add_flags, given_flags, non_empty, redis_url
from .._imports import SignalImportError, import_signals
from .redis import RedisConsumerOptions

if TYPE_CHECKING:
    from .._signal import Signal
    from ._faststream import FastStreamTransport
    from ._protocol import Consumer

__all__ = ["add_arguments", "load_signals", "run", "serve"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``aiosignals consume`` to *parser*."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--redis", type=redis_url, metavar="URL", help="redis://host:6379/0 (Redis Streams)"
    )
    source.add_argument(
        "--broker",
        type=non_empty,
        metavar="URL",
        help="a FastStream broker, chosen by the URL: amqp://, nats://, redis:// or kafka://",
    )
    parser.add_argument(
        "--app",
        required=True,
        type=non_empty,
        metavar="MODULE[:ATTR]",
        help="a signal, a list of signals, or a module whose named signals are consumed",
    )
    parser.add_argument(
        "--group", type=non_empty, default="aiosignals", help="consumer group (%(default)s)"
    )
    parser.add_argument(
        "--prefix",
        type=non_empty,
        default=None,
        help="stream prefix (aiosignals: with --redis, aiosignals. with --broker)",
    )
    add_flags(parser, RedisConsumerOptions)


def consumer_options(args: argparse.Namespace) -> dict[str, Any]:
    """Return the consumer options given on the command line, by name."""
    return given_flags(args, RedisConsumerOptions)


def load_signals(spec: str) -> list[Signal[Any]]:
    """
    Import *spec* (``module`` or ``module:attr``) and return the named signals it names.

    A module's unnamed signals have no stream: they are skipped, not an error.

    :raises ~aiosignals._imports.SignalImportError: if the module does not import, or the
        spec names no signals
    :raises ValueError: if an explicitly named signal has no name, or none is found
    """
    found = import_signals(spec)
    signals: list[Signal[Any]] = []
    for _, signal in found.signals:
        if signal.name is not None:
            signals.append(signal)
        elif not found.whole_module:
            raise ValueError(f"--app {spec!r}: {signal!r} has no name, so it has no stream")
    if not signals:
        raise ValueError(f"--app {spec!r}: no named signals found")
    return sorted(signals, key=lambda signal: signal.name or "")


def run(args: argparse.Namespace) -> int:
    """
    Consume until SIGINT or SIGTERM.

    :return: 0 after a clean stop, 2 on a bad --app, 1 if Redis refuses the credentials
    """
    import asyncio
    import logging

    try:
        signals = load_signals(args.app)
    except (SignalImportError, ValueError) as exc:
        print(f"aiosignals consume: {exc}", file=sys.stderr)
        return 2
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    if args.broker is not None:
        return _consume_broker(args, signals)
    return asyncio.run(_consume(args, signals))


async def serve(consumer: Consumer, where: str) -> None:
    """
    Run *consumer* until SIGINT or SIGTERM, saying on stderr what it reads and what it did.

    :param where: what it reads from, and as whom, for the first line
    """
    import asyncio
    import signal as os_signal

    loop = asyncio.get_running_loop()
    stops = (os_signal.SIGINT, os_signal.SIGTERM)
    for signum in stops:
        loop.add_signal_handler(signum, consumer.stop)
    _say(f"{where}; SIGINT or SIGTERM stops")
    try:
        await consumer.run()
    finally:
        for signum in stops:
            loop.remove_signal_handler(signum)
    _say(f"stopped; {consumer.handled} handled, {consumer.dead} dead-lettered")


def _say(line: str) -> None:
    print(f"aiosignals consume: {line}", file=sys.stderr, flush=True)


async def _consume(args: argparse.Namespace, signals: list[Signal[Any]]) -> int:
    from urllib.parse import urlsplit

    from .redis import FATAL_ERRORS, RedisStreamTransport

    prefix = "aiosignals:" if args.prefix is None else args.prefix
    async with RedisStreamTransport(
        args.redis, stream_prefix=prefix, group=args.group
    ) as transport:
        consumer = transport.consumer(signals, RedisConsumerOptions(**consumer_options(args)))
        where = urlsplit(str(args.redis))
        names = ", ".join(signal.name or "" for signal in signals)
        try:
            await serve(
                consumer,
                f"{names} from {where.hostname}:{where.port or 6379}"
                f" as {transport.group}/{consumer.name}",
            )
        except FATAL_ERRORS as exc:
            # A configuration error, not a crash: say what to fix, without a traceback.
            _say(
                f"Redis refused this consumer ({type(exc).__name__}: {exc});"
                " check the user and password in --redis and the user's ACL"
            )
            return 1
    return 0


def _consume_broker(args: argparse.Namespace, signals: list[Signal[Any]]) -> int:
    """
    Consume *signals* through the FastStream broker of ``args.broker``.

    :return: 0 after a clean stop, 2 on a bad URL or option, 1 if the broker cannot do what
        a message needs (a failed send on Kafka)
    """
    import asyncio

    from ..exceptions import UnsupportedByBroker
    from ._faststream import FastStreamTransport

    if args.batch_ack:
        _say("--batch-ack works with --redis only")
        return 2
    try:
        transport = FastStreamTransport.from_url(
            args.broker,
            prefix="aiosignals." if args.prefix is None else args.prefix,
            group=args.group,
        )
    except (ValueError, TypeError) as exc:
        _say(str(exc))
        return 2
    try:
        return asyncio.run(_serve_broker(args, transport, signals))
    except UnsupportedByBroker as exc:
        _say(str(exc))
        return 1


async def _serve_broker(
    args: argparse.Namespace, transport: FastStreamTransport, signals: list[Signal[Any]]
) -> int:
    from urllib.parse import urlsplit

    async with transport:
        options = consumer_options(args)
        options.pop("batch_ack", None)  # --no-batch-ack: what a broker does anyway.
        consumer = transport.consumer(signals, **options)
        where = urlsplit(str(args.broker))
        names = ", ".join(signal.name or "" for signal in signals)
        await serve(
            consumer,
            f"{names} from {transport.adapter.kind} at {where.hostname}:{where.port}"
            f" as {consumer.group}/{consumer.name}",
        )
    return 0
