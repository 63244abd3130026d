"""
``aiosignals consume``: run a consumer until SIGINT or SIGTERM.

``--redis URL`` reads Redis Streams (:class:`RedisStreamTransport`); ``--broker URL`` reads
through a FastStream broker chosen by the URL (:class:`FastStreamTransport`).

``--app module:attr`` names what to consume: a :class:`~aiosignals.Signal`, a list or tuple
of signals, or a module (``module`` alone, or ``module:attr`` naming a module), in which
case every named signal in the module's namespace is consumed. Importing it also connects
the receivers defined there. The current directory is importable, as with uvicorn.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any, TypeGuard

from .._cli_args import non_empty, positive_int, positive_seconds, redis_url

if TYPE_CHECKING:
    from .._signal import Signal

__all__ = ["add_arguments", "load_signals", "run"]


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
        "--consumer", type=non_empty, default=None, help="consumer name (default: host:pid)"
    )
    parser.add_argument(
        "--prefix",
        type=non_empty,
        default=None,
        help="stream prefix (aiosignals: with --redis, aiosignals. with --broker)",
    )
    parser.add_argument(
        "--claim-idle",
        type=positive_seconds,
        default=30.0,
        metavar="SECONDS",
        help="claim entries other consumers left pending this long (%(default)s)",
    )
    parser.add_argument(
        "--max-deliveries",
        type=positive_int,
        default=5,
        metavar="N",
        help="deliveries before an entry goes to the dead-letter stream (%(default)s)",
    )
    parser.add_argument(
        "--count",
        type=positive_int,
        default=None,
        metavar="N",
        help="entries per read (default: the consumer's, 100 with --redis)",
    )
    parser.add_argument(
        "--batch-ack",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="acknowledge each read batch at once (default with --redis); --no-batch-ack:"
        " each entry, slower, less redelivered after a crash",
    )


def load_signals(spec: str) -> list[Signal[Any]]:
    """
    Import *spec* (``module`` or ``module:attr``) and return the signals it names.

    :raises ImportError: if the module cannot be imported
    :raises ValueError: if the attribute is missing, or no named signal is found
    :raises TypeError: if it names something other than signals or a module
    """
    import importlib
    import types

    module_name, _, attr = spec.partition(":")
    if not module_name:
        raise ValueError(f"--app {spec!r}: expected module or module:attr")
    target: object = importlib.import_module(module_name)
    for part in attr.split(".") if attr else ():
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ValueError(f"--app {spec!r}: {module_name} has no attribute {attr!r}") from None
    found: list[object]
    if isinstance(target, types.ModuleType):
        # A module's unnamed signals have no stream: they are skipped, not an error.
        found = [v for v in vars(target).values() if _is_signal(v) and v.name is not None]
    elif _is_signal(target):
        found = [target]
    elif isinstance(target, list | tuple):
        found = list(target)  # pyright: ignore[reportUnknownArgumentType] -- checked below
    else:
        raise TypeError(
            f"--app {spec!r} is {target!r}: expected a Signal, a list of signals or a module"
        )
    signals: list[Signal[Any]] = []
    for signal in found:
        if not _is_signal(signal):
            raise TypeError(f"--app {spec!r} holds {signal!r}, which is not a Signal")
        if signal.name is None:
            raise ValueError(f"--app {spec!r}: {signal!r} has no name, so it has no stream")
        if all(signal is not other for other in signals):
            signals.append(signal)
    if not signals:
        raise ValueError(f"--app {spec!r}: no named signals found")
    return sorted(signals, key=lambda signal: signal.name or "")


def _is_signal(value: object) -> TypeGuard[Signal[Any]]:
    from .._signal import Signal

    return isinstance(value, Signal)


def run(args: argparse.Namespace) -> int:
    """
    Consume until SIGINT or SIGTERM.

    :return: 0 after a clean stop, 2 on a bad --app, 1 if Redis refuses the credentials
    """
    import asyncio
    import logging

    try:
        signals = load_signals(args.app)
    except (ImportError, ValueError, TypeError) as exc:
        print(f"aiosignals consume: {exc}", file=sys.stderr)
        return 2
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    if args.broker is not None:
        from ._cli_broker import consume

        return consume(args, signals)
    return asyncio.run(_consume(args, signals))


async def _consume(args: argparse.Namespace, signals: list[Signal[Any]]) -> int:
    import asyncio
    import signal as os_signal
    from urllib.parse import urlsplit

    from . import RedisStreamTransport
    from ._redis import FATAL_ERRORS, SubscriberOptions

    prefix = "aiosignals:" if args.prefix is None else args.prefix
    async with RedisStreamTransport(
        args.redis, stream_prefix=prefix, group=args.group
    ) as transport:
        options: SubscriberOptions = {
            "consumer": args.consumer,
            "claim_idle": args.claim_idle,
            "max_deliveries": args.max_deliveries,
            "batch_ack": args.batch_ack is not False,  # None: not given, the default.
        }
        if args.count is not None:
            options["count"] = args.count
        subscriber = transport.consumer(signals, **options)
        loop = asyncio.get_running_loop()
        stops = (os_signal.SIGINT, os_signal.SIGTERM)
        for signum in stops:
            loop.add_signal_handler(signum, subscriber.stop)
        where = urlsplit(str(args.redis))
        names = ", ".join(signal.name or "" for signal in signals)
        print(
            f"aiosignals consume: {names} from {where.hostname}:{where.port or 6379}"
            f" as {transport.group}/{subscriber.name}; SIGINT or SIGTERM stops",
            file=sys.stderr,
            flush=True,
        )
        try:
            await subscriber.run()
        except FATAL_ERRORS as exc:
            # A configuration error, not a crash: say what to fix, without a traceback.
            print(
                f"aiosignals consume: Redis refused this consumer ({type(exc).__name__}: {exc});"
                " check the user and password in --redis and the user's ACL",
                file=sys.stderr,
                flush=True,
            )
            return 1
        finally:
            for signum in stops:
                loop.remove_signal_handler(signum)
        print(
            f"aiosignals consume: stopped; {subscriber.handled} handled,"
            f" {subscriber.dead} dead-lettered",
            file=sys.stderr,
            flush=True,
        )
    return 0
