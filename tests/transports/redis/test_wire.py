"""The wire format: what a send becomes in the stream, and what comes back out of it."""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import pytest
import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict

from aiosignals import Event, Signal
from aiosignals.models import PostSave, post_save, resolve_sender, sender_label
from aiosignals.transports import (
    RedisStreamTransport,
    current_message,
)
from tests.transports._support import (
    SERVICE_LABEL,
    Greeting,
    Service,
    eventually,
    in_hand,
    running,
)
from tests.transports.redis._streams import (
    GROUP,
)

pytestmark = pytest.mark.redis


@dataclasses.dataclass
class Note:
    id: int
    text: str


def test_sender_labels_round_trip_classes_only_when_already_imported() -> None:
    """Classes come back as themselves; None as None; other senders stay strings."""
    assert sender_label(Service) == SERVICE_LABEL
    assert resolve_sender(sender_label(Service)) is Service
    assert resolve_sender(sender_label(None)) is None
    assert sender_label(42) == "42"
    assert resolve_sender("42") == "42"
    # A module that is not imported is never imported on behalf of a message.
    assert resolve_sender("not_imported_module_xyz:Thing") == "not_imported_module_xyz:Thing"
    assert "not_imported_module_xyz" not in sys.modules
    assert resolve_sender(f"{__name__}:GROUP") == f"{__name__}:GROUP"  # not a class


def test_current_message_is_none_outside_a_consumer() -> None:
    """Receivers called by a plain send see no stream entry."""
    assert current_message() is None


@pytest.mark.asyncio
async def test_a_model_signal_arrives_with_its_entity_rebuilt(
    transport: RedisStreamTransport,
) -> None:
    """post_save travels as JSON; the consumer hands receivers the entity class's instance."""
    received: list[Any] = []

    async def on_saved(sender: type[Note], payload: PostSave[Note]) -> None:
        received.append(payload.instance)

    with post_save.connected_to(on_saved, sender=Note):
        await transport.publish(post_save, Note, PostSave(instance=Note(1, "hi"), created=True))
        subscriber = transport.consumer([post_save], consumer="c1", block=0.2)
        async with running(subscriber):

            async def handled() -> bool:
                return subscriber.handled == 1

            await eventually(handled)
    assert received == [Note(1, "hi")]


@pytest.mark.asyncio
async def test_a_clients_own_resp3_decoding_client_works_and_stays_open(
    redis_server_url: str, stream_prefix: str
) -> None:
    """With client=..., RESP3 and decode_responses=True replies are read the same way."""
    client = aioredis.Redis.from_url(redis_server_url, protocol=3, decode_responses=True)  # pyright: ignore[reportUnknownMemberType]
    greeting = Signal(Greeting, name="greeting")
    seen: list[tuple[str, int]] = []

    @greeting.connect
    async def remember(sender: Any, payload: Greeting) -> None:
        message = in_hand()
        seen.append((payload.text, message.deliveries))

    try:
        async with RedisStreamTransport(client=client, stream_prefix=stream_prefix) as transport:
            stream = transport.stream_name(greeting)
            await transport.publish(greeting, None, Greeting(text="read"))
            await client.xgroup_create(stream, GROUP, id="0")
            await client.xreadgroup(GROUP, "gone", {stream: ">"})  # Left pending by "gone".
            await transport.publish(greeting, None, Greeting(text="fresh"))
            subscriber = transport.consumer([greeting], block=0.1, claim_idle=0.1)
            async with running(subscriber):

                async def both() -> bool:
                    return subscriber.handled == 2

                await eventually(both)
        assert sorted(seen) == [("fresh", 1), ("read", 2)]
        assert await client.ping()  # Not closed: it is the caller's.
    finally:
        await client.delete(f"{stream_prefix}greeting")
        await client.aclose()


class Measured(Event):
    value: float
    series: tuple[float, ...]
    raw: bytes


@dataclasses.dataclass
class Part:
    data: bytes


@dataclasses.dataclass
class Sample:
    id: int
    value: float
    data: bytes
    parts: list[Part]


class ModelSample(BaseModel):
    """A pydantic entity travels as its own JSON: base64 bytes are its config's choice."""

    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    id: int
    values: tuple[float, ...]
    data: bytes


@pytest.mark.asyncio
async def test_floats_nan_and_infinities_and_binary_bytes_round_trip_through_the_stream(
    transport: RedisStreamTransport,
) -> None:
    """NaN, infinities and non-UTF-8 bytes, in an event and in an entity, arrive exactly."""
    import math

    measured = Signal(Measured, name="measured")
    received: list[Any] = []

    async def on_measured(sender: Any, payload: Measured) -> None:
        received.append(payload)

    async def on_saved(sender: type[Any], payload: PostSave[Any]) -> None:
        received.append(payload.instance)

    with (
        measured.connected_to(on_measured),
        post_save.connected_to(on_saved, sender=Sample),
        post_save.connected_to(on_saved, sender=ModelSample),
    ):
        await transport.publish(
            measured,
            None,
            Measured(value=math.nan, series=(math.inf, -math.inf), raw=b"\xff\x00\xfe"),
        )
        sample = Sample(1, -math.inf, bytes(range(256))[::-1], [Part(b"\xfe\xff")])
        await transport.publish(post_save, Sample, PostSave(instance=sample, created=True))
        model = ModelSample(id=2, values=(math.inf, -math.inf), data=b"\x80\xff")
        await transport.publish(post_save, ModelSample, PostSave(instance=model, created=True))
        subscriber = transport.consumer([measured, post_save], consumer="c1", block=0.2)
        async with running(subscriber):

            async def handled() -> bool:
                return subscriber.handled == 3

            await eventually(handled)
    assert len(received) == 3
    event = next(item for item in received if isinstance(item, Measured))
    assert math.isnan(event.value)
    assert event.series == (math.inf, -math.inf)
    assert event.raw == b"\xff\x00\xfe"
    assert sample in received
    assert model in received
    assert await transport.dead_letters() == []
