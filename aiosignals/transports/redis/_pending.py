"""
What a consumer reads next, and the pending entries list it shares with its group.

A :class:`Reader` picks, at each turn, what the consumer handles next: first what this
consumer left pending (after a restart under the same name, or a read whose reply a dropped
connection lost), then failed entries whose retry is due (``XCLAIM`` to itself), then, every
half *claim_idle*, entries other consumers left idle (``XAUTOCLAIM``), else new entries
(``XREADGROUP >``), blocking until the next of those is due.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from redis import exceptions as redis_errors

from ._errors import CONNECTION_ERRORS
from ._scripts import LEAVE, TOUCH, run_script
from ._wire import Entry, Row, claimed_rows, rows, text

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from redis.typing import KeyT, StreamIdT

    from ._options import RedisConsumerOptions

__all__ = ["Interruptible", "Reader"]

logger = logging.getLogger("aiosignals.redis")

_T = TypeVar("_T")


class Interruptible(Protocol):
    """Awaits ``fn()`` unless the consumer is stopped first; returns (done, result)."""

    async def __call__(self, fn: Callable[[], Awaitable[_T]]) -> tuple[bool, _T | None]: ...


class Reader:
    """
    The reading state of one consumer: its backlog, its due retries, its claim cursors.

    :param client: the transport's client
    :param group: the consumer group
    :param name: the consumer's name in the group
    :param streams: the streams it reads
    :param options: the consumer's options
    :param owner: how the consumer shows in log lines
    """

    def __init__(
        self,
        client: aioredis.Redis,
        group: str,
        name: str,
        streams: list[str],
        options: RedisConsumerOptions,
        owner: object,
    ) -> None:
        self.client, self.group, self.name = client, group, name
        self.streams, self.options, self.owner = streams, options, owner
        self._backlog: dict[str, str] = {}
        self._claim_cursors: dict[str, str] = {}
        self._next_claim = 0.0
        self._retries: list[tuple[float, str, str]] = []  # (due, stream, id), sorted

    async def prepare(self) -> None:
        """Create the groups that are missing, and start over from this consumer's backlog."""
        for stream in self.streams:
            try:
                await self.client.xgroup_create(
                    stream, self.group, id=self.options.start_id, mkstream=True
                )
            except redis_errors.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._backlog = dict.fromkeys(self.streams, "0")
        self._claim_cursors = dict.fromkeys(self.streams, "0-0")
        self._retries.clear()  # The backlog read delivers those entries again anyway.

    def retry_later(self, entry: Entry, delay: float) -> None:
        """
        Deliver *entry*, which stays pending, to this consumer again in *delay* seconds.

        Should this consumer die first, another one claims it after *claim_idle*.
        """
        # Once per entry: it may have come back through a claim while already scheduled.
        self._retries = [r for r in self._retries if r[1:] != (entry.stream, entry.id)]
        self._retries.append((time.monotonic() + delay, entry.stream, entry.id))
        self._retries.sort()

    async def next_entries(self, interruptible: Interruptible) -> list[Entry]:
        """Return what to handle next; ``[]`` when a stop ended the wait for new entries."""
        if self._backlog:
            return await self._read_backlog()
        now = time.monotonic()
        if self._retries and self._retries[0][0] <= now:
            return await self._retry_due(now)
        if now >= self._next_claim:
            return await self._claim()
        wait = self._next_claim - now
        if self._retries:
            wait = min(wait, self._retries[0][0] - now)
        block_ms = max(1, int(min(self.options.block, wait) * 1000))
        streams: dict[KeyT, StreamIdT] = dict.fromkeys(self.streams, ">")
        read = functools.partial(
            self.client.xreadgroup, self.group, self.name, streams, self.options.count, block_ms
        )
        done, reply = await interruptible(read)
        if not done:
            return []
        return [Entry(stream, entry_id, fields, 1) for stream, entry_id, fields in rows(reply)]

    async def _read_backlog(self) -> list[Entry]:
        streams = cast("dict[KeyT, StreamIdT]", self._backlog.copy())
        found = rows(
            await self.client.xreadgroup(self.group, self.name, streams, self.options.count)
        )
        seen = {stream for stream, _, _ in found}
        for stream in list(self._backlog):
            if stream not in seen:
                del self._backlog[stream]
        for stream, entry_id, _ in found:
            self._backlog[stream] = entry_id
        return await self._with_deliveries(found)

    async def _retry_due(self, now: float) -> list[Entry]:
        due: dict[str, list[StreamIdT]] = {}
        for _ in range(self.options.count):
            if not self._retries or self._retries[0][0] > now:
                break
            _, stream, entry_id = self._retries.pop(0)
            due.setdefault(stream, []).append(entry_id)
        found: list[Row] = []
        min_idle = int(self.options.retry_delay * 1000 / 2)
        for stream, ids in due.items():
            # XCLAIM to ourselves counts a delivery; the idle floor keeps us from taking
            # back an entry another consumer claimed from us in the meantime.
            claimed = await self.client.xclaim(stream, self.group, self.name, min_idle, ids)
            found.extend(claimed_rows(stream, claimed))
        return await self._with_deliveries(found)

    async def _claim(self) -> list[Entry]:
        claim_idle = self.options.claim_idle
        found: list[Row] = []
        for stream, cursor in self._claim_cursors.items():
            reply = await self.client.xautoclaim(
                stream,
                self.group,
                self.name,
                min_idle_time=int(claim_idle * 1000),
                start_id=cursor,
                count=self.options.count,
            )
            self._claim_cursors[stream] = text(reply[0])
            claimed = claimed_rows(stream, reply[1])
            if claimed:
                logger.info(
                    "%r: claimed %d entries of %s pending more than %s s",
                    self.owner,
                    len(claimed),
                    stream,
                    claim_idle,
                )
            found.extend(claimed)
            if len(reply) > 2 and reply[2]:
                logger.warning(
                    "%r: %d pending entries of %s were trimmed from the stream before being"
                    " handled",
                    self.owner,
                    len(reply[2]),
                    stream,
                )
        if all(cursor in ("0-0", "0") for cursor in self._claim_cursors.values()):
            # The whole pending list was scanned: look again in half an idle period.
            self._next_claim = time.monotonic() + claim_idle / 2
        return await self._with_deliveries(found)

    async def _with_deliveries(self, found: list[Row]) -> list[Entry]:
        """Look up how often each re-read entry has been delivered (XPENDING)."""
        if not found:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for stream, entry_id, _ in found:
                pipe.xpending_range(stream, self.group, entry_id, entry_id, 1)
            replies = await pipe.execute()
        entries: list[Entry] = []
        for (stream, entry_id, fields), reply in zip(found, replies, strict=True):
            pending = cast("list[dict[str, Any]]", reply)
            if not pending or text(pending[0]["consumer"]) != self.name:
                continue  # Acknowledged or taken by another consumer since: not ours.
            entries.append(Entry(stream, entry_id, fields, int(pending[0]["times_delivered"])))
        return entries

    async def touch(self, held: dict[str, set[str]]) -> None:
        """
        Reset the idle time of the entries in *held* (stream -> ids) still this consumer's.

        Best effort: the run loop reports and handles connection trouble; next time may do.
        """
        for stream, ids in list(held.items()):
            if not ids:
                continue
            try:
                await run_script(self.client, TOUCH, stream, self.group, self.name, *ids)
            except (*CONNECTION_ERRORS, redis_errors.ResponseError) as exc:
                logger.debug("%r: could not refresh the entries in hand: %s", self.owner, exc)

    async def leave(self) -> None:
        """
        Remove this consumer from the group of each stream where it has nothing pending.

        Called after a clean stop, so that consumers named ``hostname:pid`` do not pile up in
        ``XINFO CONSUMERS`` with every restart. Where entries are pending it stays, so that
        it handles them when it runs again under this name, or another consumer claims them.
        Best effort: Redis unreachable or the group gone leaves it as it is.
        """
        for stream in self.streams:
            try:
                await run_script(self.client, LEAVE, stream, self.group, self.name)
            except (*CONNECTION_ERRORS, redis_errors.ResponseError) as exc:
                logger.debug("%r: could not leave the group of %s: %s", self.owner, stream, exc)
