"""
The options of a Redis consumer, written once: the consumer, its transport and the CLI read them.

``aiosignals consume`` makes a flag of each field that has :func:`~aiosignals._cli_args.flag`
metadata, with the field's default in its help, so a default changed here changes everywhere.
"""

from __future__ import annotations

import dataclasses
from typing import TypedDict

from ..._cli_args import flag, non_empty, positive_int, positive_seconds

__all__ = ["RedisConsumerOptions", "SubscriberOptions"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RedisConsumerOptions:
    """
    How a :class:`RedisConsumer` reads, retries and gives up; every field has a default.

    ``RedisConsumer(transport, signals, options, count=10)`` takes these, and keywords that
    override fields of them; ``dataclasses.replace(options, count=10)`` makes a changed copy.

    :raises ValueError: if a number is out of range

    .. versionadded:: 0.2
    """

    consumer: str | None = dataclasses.field(
        default=None,
        metadata=flag("consumer name (default: host:pid)", type=non_empty),
    )
    """The consumer's name in the group; ``None``: ``hostname:pid``. A consumer restarted
    under the same name first handles what it left pending."""
    claim_idle: float = dataclasses.field(
        default=30.0,
        metadata=flag(
            "claim entries other consumers left pending this long ({default})",
            metavar="SECONDS",
            type=positive_seconds,
        ),
    )
    """Seconds an entry must have been pending and idle before another consumer claims it.
    A running consumer refreshes the entries it holds every third of this, however long its
    receivers take, so only a consumer that died (or stalled that long) loses them."""
    max_deliveries: int = dataclasses.field(
        default=5,
        metadata=flag(
            "deliveries before an entry goes to the dead-letter stream ({default})",
            metavar="N",
            type=positive_int,
        ),
    )
    """Deliveries of an entry before it goes to the dead-letter stream."""
    count: int = dataclasses.field(
        default=100,
        metadata=flag(
            "entries per read (default: the consumer's, {default} with --redis)",
            metavar="N",
            type=positive_int,
        ),
    )
    """Entries read per round trip."""
    batch_ack: bool = dataclasses.field(
        default=True,
        metadata=flag(
            "acknowledge each read batch at once (default with --redis); --no-batch-ack:"
            " each entry, slower, less redelivered after a crash"
        ),
    )
    """Acknowledge the entries of one read in one ``XACK`` once the last one's receivers
    ran; ``False``: each once its own did (more round trips, but a consumer killed mid-batch
    has only the entry in hand delivered again)."""
    block: float = 5.0
    """Seconds one read waits for new entries."""
    retry_delay: float = 1.0
    """Seconds before an entry whose send failed is tried again (doubling with each
    delivery, at most *claim_idle*)."""
    start_id: str = "0"
    """Where a group the consumer creates starts: ``"0"`` consumes what the stream already
    holds, ``"$"`` only what comes after."""
    reconnect_delay: float = 0.1
    """The first pause after a connection error, in seconds."""
    max_reconnect_delay: float = 10.0
    """The longest pause between reconnection attempts, in seconds."""

    def __post_init__(self) -> None:
        if self.count < 1 or self.max_deliveries < 1:
            raise ValueError("count and max_deliveries must be at least 1")
        delays = (
            self.block,
            self.claim_idle,
            self.retry_delay,
            self.reconnect_delay,
            self.max_reconnect_delay,
        )
        if min(delays) <= 0:
            raise ValueError(
                "block, claim_idle, retry_delay and the reconnect delays must be positive"
            )


class SubscriberOptions(TypedDict, total=False):
    """
    The fields of :class:`RedisConsumerOptions` as keywords, for ``transport.consumer(**options)``.

    .. versionadded:: 0.1
    """

    consumer: str | None
    count: int
    block: float
    claim_idle: float
    retry_delay: float
    max_deliveries: int
    start_id: str
    reconnect_delay: float
    max_reconnect_delay: float
    batch_ack: bool
