from __future__ import annotations

import pytest

from tests._servers import (
    nats_prefix,
    nats_process,
    nats_url,
    postgres_server_url,
    postgres_url,
    rabbitmq_url,
    redis_process,
    redis_server_url,
    stream_prefix,
)

__all__ = [
    "nats_prefix",
    "nats_process",
    "nats_url",
    "postgres_server_url",
    "postgres_url",
    "rabbitmq_url",
    "redis_process",
    "redis_server_url",
    "stream_prefix",
]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every anyio test on asyncio and on trio."""
    backend: str = request.param
    return backend
