"""RedisStreamTransport: publishing and forwarding sends as stream entries."""

from __future__ import annotations

import inspect
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

from aiosignals import Event, Signal
from tests import _servers
from tests.transports._processes import ROOT
from tests.transports._support import (
    SERVICE_LABEL,
    Greeting,
    Service,
    eventually,
    running,
)
from tests.transports.redis._streams import (
    entries,
)

if TYPE_CHECKING:
    from aiosignals.transports import (
        RedisStreamTransport,
    )

pytestmark = pytest.mark.redis


def test_the_stream_prefix_fixture_deletes_its_keys(redis_server_url: str) -> None:
    """After its test, ``stream_prefix`` deletes the keys under the prefix, and only those."""
    import redis

    fixture = cast("Callable[[], Iterator[str]]", inspect.unwrap(_servers.stream_prefix))
    steps = fixture()
    prefix = next(steps)
    other = f"{prefix[:-1]}-other"  # Shares all but the prefix's final ":".
    with redis.Redis.from_url(redis_server_url) as client:
        try:
            client.xadd(f"{prefix}greeting", {"payload": "{}"})
            client.set(f"{prefix}processed", "1")
            client.set(other, "1")
            with pytest.raises(StopIteration):
                next(steps)
            assert list(client.scan_iter(match=f"{prefix}*")) == []
            assert client.get(other) == b"1"
        finally:
            client.delete(f"{prefix}greeting", f"{prefix}processed", other)


@pytest.mark.asyncio
async def test_publish_writes_payload_json_sender_label_and_key(
    transport: RedisStreamTransport,
) -> None:
    """An entry holds the payload's pydantic JSON, the sender's module:qualname and the key."""
    greeting = Signal(Greeting, name="greeting")
    entry_id = await transport.publish(greeting, Service, Greeting(text="hi"), key="k-1")
    assert await entries(transport.client, f"{transport.stream_prefix}greeting") == [
        (entry_id, {"payload": '{"text":"hi"}', "sender": SERVICE_LABEL, "key": "k-1"})
    ]


@pytest.mark.asyncio
async def test_publish_validates_a_payload_of_another_type(
    transport: RedisStreamTransport,
) -> None:
    """A dict payload is validated into the payload type, as send() does; bad ones raise."""
    from pydantic import ValidationError

    greeting = Signal(Greeting, name="greeting")
    await transport.publish(greeting, None, cast("Greeting", {"text": "from a dict"}))
    [(_, fields)] = await entries(transport.client, f"{transport.stream_prefix}greeting")
    assert fields == {"payload": '{"text":"from a dict"}', "sender": ""}
    with pytest.raises(ValidationError):
        await transport.publish(greeting, None, cast("Greeting", {"nope": 1}))


@pytest.mark.asyncio
async def test_unnamed_signal_is_a_clear_value_error(transport: RedisStreamTransport) -> None:
    """A signal without a name has no stream: publish, forward and consumer say so."""
    anonymous = Signal(Greeting)
    with pytest.raises(ValueError, match="has no name"):
        await transport.publish(anonymous, None, Greeting(text="x"))
    with pytest.raises(ValueError, match="has no name"):
        transport.forward(anonymous)
    with pytest.raises(ValueError, match="has no name"):
        transport.consumer([anonymous])
    with pytest.raises(ValueError, match="dead-letter stream"):
        transport.consumer(["dead"])


def test_the_hiredis_extra_makes_redis_py_parse_replies_with_hiredis() -> None:
    """``aiosignals[hiredis]`` (in ``all``) installs hiredis, which redis-py then parses with."""
    import importlib.metadata

    requires = importlib.metadata.requires("aiosignals") or []
    assert "redis[hiredis]>=5.0.1; extra == 'hiredis'" in requires
    assert "redis[hiredis]>=5.0.1; extra == 'all'" in requires
    pytest.importorskip("hiredis", reason="the hiredis extra is not installed")
    from redis._parsers import _AsyncHiredisParser  # pyright: ignore[reportPrivateUsage]
    from redis.asyncio.connection import DefaultParser
    from redis.utils import HIREDIS_AVAILABLE

    # No switch of ours: every connection a transport opens gets redis-py's default parser.
    assert HIREDIS_AVAILABLE
    assert DefaultParser is _AsyncHiredisParser


def test_import_without_the_extra_names_it() -> None:
    """Without redis-py, importing aiosignals.transports says which extra to install."""
    code = "import sys; sys.modules['redis'] = None; import aiosignals.transports"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert result.returncode == 1
    assert 'ImportError: aiosignals.transports needs redis-py: pip install "aiosignals[redis]"' in (
        result.stderr
    )


@pytest.mark.asyncio
async def test_forward_publishes_sends_once_and_unforward_stops(
    transport: RedisStreamTransport,
) -> None:
    """forward() connects one durable receiver that publishes each send (autocommit here)."""
    greeting = Signal(Greeting, name="greeting")
    stream = transport.stream_name(greeting)
    transport.forward(greeting)
    transport.forward(greeting)  # Already forwarded: nothing more is connected.
    assert len(greeting.receivers_for(Service)) == 1
    await greeting.send(Service, text="one")
    [(_, fields)] = await entries(transport.client, stream)
    # No key: not called by the outbox relay, so there is no delivery id.
    assert fields == {"payload": '{"text":"one"}', "sender": SERVICE_LABEL}

    assert transport.unforward(greeting)
    assert not transport.unforward(greeting)
    await greeting.send(Service, text="two")
    assert await transport.client.xlen(stream) == 1


@pytest.mark.asyncio
async def test_forward_honours_the_sender(transport: RedisStreamTransport) -> None:
    """forward(signal, sender=X) publishes only X's sends."""
    greeting = Signal(Greeting, name="greeting")
    transport.forward(greeting, sender=Service)
    await greeting.send(object(), text="other")
    await greeting.send(Service, text="mine")
    rows = await entries(transport.client, transport.stream_name(greeting))
    assert [fields["payload"] for _, fields in rows] == ['{"text":"mine"}']


@pytest.mark.asyncio
async def test_a_consumer_does_not_forward_what_it_reads_again(
    transport: RedisStreamTransport,
) -> None:
    """A process that forwards and consumes a signal does not publish consumed sends again."""
    greeting = Signal(Greeting, name="greeting")
    transport.forward(greeting)
    seen: list[str] = []

    @greeting.connect
    async def remember(sender: Any, payload: Greeting) -> None:
        seen.append(payload.text)

    await greeting.send(Service, text="hello")  # Published, and received locally.
    subscriber = transport.consumer([greeting], block=0.2)
    async with running(subscriber):

        async def handled() -> bool:
            return subscriber.handled == 1

        await eventually(handled)
    assert seen == ["hello", "hello"]
    assert await transport.client.xlen(transport.stream_name(greeting)) == 1


@pytest.mark.asyncio
async def test_forwarding_through_the_outbox_keys_entries_by_database_and_delivery(
    transport: RedisStreamTransport, tmp_path: Path
) -> None:
    """An entry forwarded by the outbox relay has the key ``outbox:<database name>:<row id>``."""
    from aiosignals.outbox import OutboxRelay
    from aiosignals.repository.sqlalchemy import Database

    greeting = Signal(Greeting, name="greeting")
    transport.forward(greeting)
    try:
        async with Database(f"sqlite+aiosqlite:///{tmp_path / 'shop.db'}", name="shop") as db:
            await OutboxRelay.create_table(db)
            async with db.transaction():
                await greeting.send(Service, text="stored first")
            assert await entries(transport.client, transport.stream_name(greeting)) == []
            assert await OutboxRelay(db).run_once() == 1
    finally:
        transport.unforward(greeting)
    [(_, fields)] = await entries(transport.client, transport.stream_name(greeting))
    assert fields["key"].startswith("outbox:shop:")
    assert int(fields["key"].rpartition(":")[2]) >= 1


class Anything(Event):
    thing: Any


@pytest.mark.asyncio
async def test_a_payload_with_no_json_form_is_refused_at_publish_naming_signal_and_stream(
    transport: RedisStreamTransport,
) -> None:
    """publish() of a value with no JSON form raises a TypeError naming signal and stream."""
    anything = Signal(Anything, name="anything")
    with pytest.raises(TypeError, match=r"signal 'anything' to the stream '.*anything'"):
        await transport.publish(anything, None, Anything(thing=object()))
    assert await entries(transport.client, transport.stream_name(anything)) == []
