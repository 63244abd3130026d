"""
The Lua scripts that keep the pending entries list safe, and how they are run.

Each does in one atomic step what two commands would race on: another consumer may claim an
entry, or a publisher add one, between them.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable
from typing import TYPE_CHECKING, TypeVar, cast, overload

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from redis.typing import EncodableT

__all__ = ["LEAVE", "TOUCH", "run_script"]

_T = TypeVar("_T")

# Resets the idle time of the given entries that are still this consumer's (XCLAIM JUSTID
# does not count a delivery), atomically, so that an entry another consumer has claimed in
# the meantime is never taken back. KEYS: stream; ARGV: group, consumer, ids...
TOUCH = """
local touched = {}
for i = 3, #ARGV do
  local entry = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)[1]
  if entry and entry[2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    touched[#touched + 1] = ARGV[i]
  end
end
return touched
"""

# Removes the consumer from the group only if it has no pending entries, atomically, so that
# an entry it holds can never be lost (DELCONSUMER drops a consumer's pending entries).
# KEYS: stream; ARGV: group, consumer. Returns 1 if removed, 0 if kept.
LEAVE = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then
  return 0
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


# Two overloads: mypy infers Never for "Awaitable[T] | T" given a bare Awaitable[X].
@overload
async def _reply(value: Awaitable[_T]) -> _T: ...
@overload
async def _reply(value: Awaitable[_T] | _T) -> _T: ...
async def _reply(value: Awaitable[_T] | _T) -> _T:
    # redis-py before 6 annotates EVAL with the sync client's ``Awaitable[T] | T``; later
    # versions give the asyncio client ``Awaitable[T]``. The ``redis`` extra allows both, so
    # the package must type-check on both.
    if inspect.isawaitable(value):
        return cast("_T", await value)
    return value


async def run_script(client: aioredis.Redis, script: str, stream: str, *args: EncodableT) -> object:
    """Run *script* with *stream* as its one key and *args* as ``ARGV``; return its reply."""
    return await _reply(client.eval(script, 1, stream, *args))
