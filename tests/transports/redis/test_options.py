"""RedisConsumerOptions: the consumer's defaults, written once, and the flags made from them."""

from __future__ import annotations

import argparse
import dataclasses
import importlib

import pytest

from aiosignals.transports import (
    RedisConsumer,
    RedisConsumerOptions,
    RedisStreamTransport,
    SubscriberOptions,
)
from aiosignals.transports._cli import add_arguments, consumer_options

# Nothing connects: consumer() only builds the consumer.
URL = "redis://127.0.0.1:1/0"


def test_a_consumer_takes_its_defaults_from_the_options_and_keywords_override_them() -> None:
    """Without options a consumer has RedisConsumerOptions' defaults; keywords change fields."""
    transport = RedisStreamTransport(URL)
    plain = transport.consumer(["greeting"])
    assert plain.options == RedisConsumerOptions()
    assert (plain.count, plain.claim_idle, plain.batch_ack) == (100, 30.0, True)
    changed = transport.consumer(["greeting"], RedisConsumerOptions(count=5), block=1.0)
    assert changed.options == RedisConsumerOptions(count=5, block=1.0)
    assert (changed.count, changed.block, changed.max_deliveries) == (5, 1.0, 5)
    assert isinstance(changed, RedisConsumer)


@pytest.mark.parametrize(
    "change",
    [{"count": 0}, {"max_deliveries": 0}, {"block": 0.0}, {"retry_delay": -1.0}],
)
def test_out_of_range_options_are_refused(change: SubscriberOptions) -> None:
    """A count below 1 or a delay that is not positive is a ValueError, however it is given."""
    with pytest.raises(ValueError, match="must be"):
        dataclasses.replace(RedisConsumerOptions(), **change)
    with pytest.raises(ValueError, match="must be"):
        RedisStreamTransport(URL).consumer(["greeting"], **change)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["--redis", URL, "--app", "m", *argv])


def test_the_consume_flags_are_made_from_the_options_with_their_defaults_in_the_help() -> None:
    """Each flag's help shows the options' default; a flag not given leaves the default be."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    help_text = " ".join(parser.format_help().split())
    defaults = RedisConsumerOptions()
    assert f"left pending this long ({defaults.claim_idle})" in help_text
    assert f"dead-letter stream ({defaults.max_deliveries})" in help_text
    assert f"{defaults.count} with --redis" in help_text
    assert "--batch-ack, --no-batch-ack" in help_text
    assert consumer_options(parse()) == {}
    given = parse("--count", "7", "--no-batch-ack", "--claim-idle", "2", "--consumer", "c")
    assert consumer_options(given) == {
        "count": 7,
        "batch_ack": False,
        "claim_idle": 2.0,
        "consumer": "c",
    }
    assert RedisConsumerOptions(**consumer_options(given)).count == 7


@pytest.mark.parametrize("module", ["aiosignals.transports", "aiosignals.transports.redis"])
def test_subscriber_is_a_deprecated_alias_of_redis_consumer(module: str) -> None:
    """The old name still works, with a DeprecationWarning naming the new one."""
    with pytest.warns(DeprecationWarning, match="renamed RedisConsumer"):
        alias = importlib.import_module(module).Subscriber
    assert alias is RedisConsumer


def test_the_redis_package_exports_what_the_transports_package_exports() -> None:
    """aiosignals.transports.redis and aiosignals.transports give the same objects."""
    import aiosignals.transports as transports
    import aiosignals.transports.redis as redis_transport

    for name in redis_transport.__all__:
        assert getattr(redis_transport, name) is getattr(transports, name), name
