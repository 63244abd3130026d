"""
Pipelining of concurrent publishes: the XADDs issued while one round trip is out go in the next.

One publish alone costs a round trip to Redis; a hundred issued at once by a hundred tasks
(a web server's requests, a relay's receivers) cost a hundred, one after the other on one
connection or in parallel on many. :class:`PublishBatcher` puts every XADD issued in the same
tick of the event loop into one pipeline, and those issued while that pipeline is out into
the next, so the round trips shrink to one per batch and the server gets them in the order
they were issued.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from redis.typing import EncodableT, FieldT

__all__ = ["PublishBatcher"]

logger = logging.getLogger("aiosignals.redis")


@dataclasses.dataclass(slots=True)
class _Publish:
    stream: str
    fields: dict[FieldT, EncodableT]
    maxlen: int | None
    future: asyncio.Future[bytes | str]


class PublishBatcher:
    """
    Sends the XADDs of concurrent publishers in pipelines, one pipeline at a time.

    Order: entries reach the server in the order :meth:`xadd` was called, since one pipeline
    is out at a time and each keeps its order. So a publisher's entries keep their order,
    whether it awaits each publish or issues them concurrently; entries of several publishers
    interleave in the order they were issued.

    Outcome, for each call: it returns the entry id only once Redis has replied with it; a
    failed pipeline (a dropped connection) raises its error in every call of the batch, and
    an error reply (``WRONGTYPE``...) only in the call it belongs to. A call cancelled while
    its entry waits for a pipeline withdraws the entry: it is never written. A call cancelled
    once its pipeline has been sent cannot take the entry back: it is written, and a warning
    names it, since the caller was not told.

    :param client: the client whose connections carry the pipelines
    :param max_batch: at most this many XADDs in one pipeline
    """

    def __init__(self, client: aioredis.Redis, *, max_batch: int = 1000) -> None:
        self.client = client
        """The client whose connections carry the pipelines."""
        self.max_batch = max_batch
        """At most this many XADDs in one pipeline."""
        self._queue: collections.deque[_Publish] = collections.deque()
        self._flusher: asyncio.Task[None] | None = None

    async def xadd(
        self, stream: str, fields: dict[FieldT, EncodableT], *, maxlen: int | None = None
    ) -> bytes | str:
        """
        Append *fields* to *stream* in the next pipeline and return the entry id Redis gave.

        :param maxlen: trim the stream to about this many entries (``None``: never)
        :raises redis.exceptions.RedisError: the error of its pipeline, or its own reply
        :raises OSError: a socket error of its pipeline
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes | str] = loop.create_future()
        self._queue.append(_Publish(stream, fields, maxlen, future))
        flusher = self._flusher
        # A flusher of another (closed) loop will never run: start one on this loop.
        if flusher is None or flusher.done() or flusher.get_loop() is not loop:
            self._flusher = loop.create_task(self._flush())
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.exception() is None:
                # Replied to, then cancelled before this task resumed: written all the same.
                _warn_written(stream, future.result())
            raise

    async def wait_sent(self) -> None:
        """Wait until the XADDs issued so far have been sent and replied to (or failed)."""
        loop = asyncio.get_running_loop()
        while self._flusher is not None and not self._flusher.done():
            if self._flusher.get_loop() is not loop:
                return  # Its loop is gone or elsewhere: nothing this one can wait for.
            await asyncio.wait([self._flusher])

    async def _flush(self) -> None:
        queue = self._queue
        try:
            while queue:
                batch: list[_Publish] = []
                while queue and len(batch) < self.max_batch:
                    publish = queue.popleft()
                    # A cancelled caller's future is done: its entry is withdrawn, unsent.
                    if not publish.future.done():
                        batch.append(publish)
                if batch:
                    await self._send(batch)
        finally:
            # Only if this task was cancelled (its loop closing) can entries be left: they
            # will not be sent, and their callers must not wait for them forever.
            while queue:
                queue.popleft().future.cancel()

    async def _send(self, batch: list[_Publish]) -> None:
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for publish in batch:
                    pipe.xadd(
                        publish.stream, publish.fields, maxlen=publish.maxlen, approximate=True
                    )
                replies = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:
            # Written or not, nobody will know: the callers get no id, only the cancellation.
            for publish in batch:
                publish.future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 -- handed to every caller of the batch
            for publish in batch:
                if not publish.future.done():
                    publish.future.set_exception(exc)
            return
        for publish, reply in zip(batch, replies, strict=True):
            if publish.future.done():
                # Its caller was cancelled while the pipeline was out: written all the same.
                if not isinstance(reply, Exception):
                    _warn_written(publish.stream, reply)
            elif isinstance(reply, Exception):
                publish.future.set_exception(reply)
            else:
                publish.future.set_result(reply)


def _warn_written(stream: str, entry_id: bytes | str) -> None:
    logger.warning(
        "a publish to %s was cancelled after its entry had been sent: it was written as %s",
        stream,
        entry_id.decode() if isinstance(entry_id, bytes) else entry_id,
    )
