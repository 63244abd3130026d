"""
The real servers some tests need: PostgreSQL, Redis, RabbitMQ and NATS (JetStream).

``.ci/run`` starts PostgreSQL and Redis on loopback and sets ``AIOSIGNALS_TEST_POSTGRES_URL`` and
``AIOSIGNALS_TEST_REDIS_URL`` (``scripts/services.sh`` does the same on a workstation).
RabbitMQ and NATS are looked for at ``AIOSIGNALS_TEST_RABBITMQ_URL`` and
``AIOSIGNALS_TEST_NATS_URL``, by default on their standard loopback ports (``.ci/run`` starts
them there when they are not running). With
``AIOSIGNALS_REQUIRE_SERVICES=1`` (set by CI) a test whose server is missing fails; otherwise it
is skipped with the reason, so a laptop without PostgreSQL still runs everything else.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

REQUIRED = os.environ.get("AIOSIGNALS_REQUIRE_SERVICES") == "1"


def unavailable(reason: str) -> None:
    """Fail under CI, skip elsewhere: a missing server must never pass silently in CI."""
    if REQUIRED:
        pytest.fail(f"{reason} (AIOSIGNALS_REQUIRE_SERVICES=1)")
    pytest.skip(f'{reason}; run `eval "$(scripts/services.sh start .services)"` first')


ARQ_ELSEWHERE = (
    "arq pins redis<6 and this environment has no arq: its tests run in `nox -s tests_arq`"
)


def require_arq() -> None:
    """
    Skip the calling test (or module) without arq; fail instead in ``nox -s tests_arq``.

    arq cannot share the main test environment (it pins redis<6, taskiq-redis needs redis>=8),
    so its own session installs it and sets ``AIOSIGNALS_REQUIRE_ARQ=1``: there a missing arq
    is an error, never a silent skip.
    """
    if os.environ.get("AIOSIGNALS_REQUIRE_ARQ") == "1":
        importlib.import_module("arq")
    else:
        pytest.importorskip("arq", reason=ARQ_ELSEWHERE)


def _reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), 2):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """The maintenance URL (``postgresql://...``) of the test PostgreSQL server."""
    url = os.environ.get("AIOSIGNALS_TEST_POSTGRES_URL")
    if not url:
        unavailable("AIOSIGNALS_TEST_POSTGRES_URL is not set")
    assert url is not None
    if not _reachable(url):
        unavailable(f"PostgreSQL at {url} is not reachable")
    return url


def _admin(server_url: str, statement: str) -> None:
    subprocess.run(
        ["psql", server_url, "-v", "ON_ERROR_STOP=1", "-qc", statement],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh, empty database for one test, as an SQLAlchemy asyncpg URL; dropped after."""
    name = f"aiosignals_{uuid.uuid4().hex[:12]}"
    _admin(postgres_server_url, f"CREATE DATABASE {name}")
    parts = urlsplit(postgres_server_url)
    url = urlunsplit(("postgresql+asyncpg", parts.netloc, f"/{name}", "", ""))
    try:
        yield url
    finally:
        _admin(postgres_server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def redis_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """
    The URL of the shared test redis-server.

    ``AIOSIGNALS_TEST_REDIS_URL`` when it is set; otherwise a redis-server of the session's
    own, started from the binary on PATH (the URL is then exported for subprocesses).
    """
    url = os.environ.get("AIOSIGNALS_TEST_REDIS_URL")
    if url:
        if not _reachable(url):
            unavailable(f"Redis at {url} is not reachable")
        yield url
        return
    if shutil.which("redis-server") is None:
        unavailable("AIOSIGNALS_TEST_REDIS_URL is not set and redis-server is not installed")
    server = RedisProcess(
        port=free_port(), directory=tmp_path_factory.mktemp("redis"), appendonly=False
    )
    server.start()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("AIOSIGNALS_TEST_REDIS_URL", server.url)
            yield server.url
    finally:
        server.stop()


@pytest.fixture
def stream_prefix() -> Iterator[str]:
    """
    A stream-name prefix of one test's own, so tests sharing a server never meet.

    Afterwards the keys naming it (streams, their groups, test records, and arq's
    ``arq:job:<id>`` keys, whose job ids name it inside) are deleted from the shared server,
    so runs leave nothing behind.
    """
    prefix = f"t{uuid.uuid4().hex[:10]}:"
    yield prefix
    url = os.environ.get("AIOSIGNALS_TEST_REDIS_URL")
    if not url:
        return
    # Imported here: this module must stay importable without the redis extra.
    import redis

    try:
        with redis.Redis.from_url(url, socket_connect_timeout=2) as client:
            keys = list(client.scan_iter(match=f"*{prefix}*"))
            if keys:
                client.delete(*keys)
    except (redis.ConnectionError, redis.TimeoutError):
        pass  # No server: the test was skipped, or had nothing to leave behind there.


@dataclass
class RedisProcess:
    """A redis-server of one test's own, that the test may kill and restart."""

    port: int
    directory: Path
    appendonly: bool = True
    """Whether it keeps an append-only file (fsync at each write) to survive a restart."""
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        self.process = subprocess.Popen(
            [
                binary, "--bind", "127.0.0.1", "--port", str(self.port),
                "--dir", str(self.directory),
                "--appendonly", "yes" if self.appendonly else "no",
                "--appendfsync", "always", "--save", "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not _reachable(self.url):
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


@pytest.fixture
def redis_process(tmp_path: Path) -> Iterator[RedisProcess]:
    """A private redis-server (AOF on) the test controls; stopped after."""
    if shutil.which("redis-server") is None:
        unavailable("redis-server is not installed")
    server = RedisProcess(port=free_port(), directory=tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _broker_url(variable: str, default: str, what: str) -> str:
    """The URL in *variable*, else *default*; unreachable: skipped, or failed under CI."""
    url = os.environ.get(variable) or default
    if not _reachable(url):
        unavailable(f"{what} at {url} is not reachable (set {variable})")
    return url


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    """The AMQP URL of the test RabbitMQ (``AIOSIGNALS_TEST_RABBITMQ_URL``, else loopback)."""
    return _broker_url(
        "AIOSIGNALS_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/", "RabbitMQ"
    )


@pytest.fixture(scope="session")
def nats_url() -> str:
    """The URL of the test NATS with JetStream (``AIOSIGNALS_TEST_NATS_URL``, else loopback)."""
    return _broker_url("AIOSIGNALS_TEST_NATS_URL", "nats://127.0.0.1:4222", "NATS")


@pytest.fixture
def nats_prefix(nats_url: str) -> Iterator[str]:
    """A subject prefix of one test's own; its JetStream stream is deleted afterwards."""
    prefix = f"t{uuid.uuid4().hex[:10]}."
    yield prefix

    async def delete() -> None:
        # Imported here: this module must stay importable without the faststream extra.
        import nats
        from nats.js.errors import NotFoundError

        connection = await nats.connect(nats_url)
        try:
            await connection.jetstream().delete_stream(prefix.rstrip("."))
        except NotFoundError:
            pass  # The test created none.
        finally:
            await connection.close()

    import asyncio

    asyncio.run(delete())


@dataclass
class NatsProcess:
    """A nats-server with JetStream of one test's own, that the test may stop and restart."""

    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = shutil.which("nats-server")
        assert binary is not None
        self.process = subprocess.Popen(
            [binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.directory)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not _reachable(self.url):
            if time.monotonic() > deadline:
                raise RuntimeError("nats-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


# Debian's wrapper (/usr/sbin/rabbitmq-server) switches to the rabbitmq user; this script
# runs the node as the current user, in the foreground, and stops it on SIGTERM.
RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"


@dataclass
class RabbitMQProcess:
    """A rabbitmq-server node of one test's own, that the test may stop and restart."""

    port: int
    directory: Path
    name: str = dataclasses.field(default_factory=lambda: f"aiosignals-{uuid.uuid4().hex[:8]}")
    dist_port: int = dataclasses.field(default_factory=lambda: free_port())
    process: subprocess.Popen[bytes] | None = None
    start_times: list[float] = dataclasses.field(default_factory=list[float])

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def start(self) -> None:
        plugins = self.directory / "enabled_plugins"
        plugins.write_text("[].\n")  # No management plugin: no port of its own to clash.
        env = {
            **os.environ,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_NODENAME": f"{self.name}@localhost",
            # The Erlang distribution port, else 25672 + the node port's offset: may be taken.
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.directory / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
            "RABBITMQ_CONFIG_FILE": str(self.directory / "rabbitmq"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.directory / "advanced.config"),
            "RABBITMQ_PID_FILE": str(self.directory / "pid"),
        }
        began = time.monotonic()
        self.process = subprocess.Popen(
            [RABBITMQ_SERVER], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = began + 60
        while not _reachable(self.url):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"rabbitmq-server did not start (logs: {self.directory})")
            time.sleep(0.1)
        self.start_times.append(time.monotonic() - began)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@pytest.fixture
def rabbitmq_process(tmp_path: Path) -> Iterator[RabbitMQProcess]:
    """A private rabbitmq-server node (data and logs under tmp_path) the test controls."""
    if not os.access(RABBITMQ_SERVER, os.X_OK):
        unavailable("rabbitmq-server is not installed")
    server = RabbitMQProcess(port=free_port(), directory=tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def nats_process(tmp_path: Path) -> Iterator[NatsProcess]:
    """A private nats-server (JetStream on, stored under tmp_path) the test controls."""
    if shutil.which("nats-server") is None:
        unavailable("nats-server is not installed")
    server = NatsProcess(port=free_port(), directory=tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def example_env(**extra: str) -> dict[str, str]:
    """
    The environment an example runs in under the tests: ours, less a shell's service URLs.

    ``scripts/services.sh`` (and so ``.ci/run``) exports ``DATABASE_URL`` and ``REDIS_URL``
    for a user's shell; an example reading them would leave its embedded SQLite default
    untested, so a test passes the URLs it wants in *extra*.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    return {**env, "PYTHONPATH": str(Path(__file__).parent.parent), **extra}
