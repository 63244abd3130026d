"""
What the FastAPI and aiohttp integrations both promise, tested once over both frameworks.

Each test runs on the frameworks named by its parametrisation: ``EVERYWHERE`` adds FastAPI
on trio (Starlette runs on anyio); tests that touch SQLite (aiosqlite) or the example apps
run on asyncio only. What only one framework has stays in ``test_fastapi.py`` or
``test_aiohttp.py``.
"""

from __future__ import annotations

import logging
import signal as os_signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from aiosignals import EventBus, Phase, Service
from aiosignals.models import PostSave, post_save
from aiosignals.outbox import OutboxRelay, current_delivery
from aiosignals.repository.sqlalchemy import Database

from . import (
    EXAMPLES,
    Recorder,
    count,
    example_env,
    free_port,
    recording_after_commit,
    run_example,
    sqlite_url,
)
from . import frameworks as frameworks_module
from .frameworks import AIOHTTP, FASTAPI, Client, Framework, Ping, Reply, ping

pytestmark = pytest.mark.anyio

_SETUPS = {
    "fastapi": (FASTAPI, "asyncio"),
    "fastapi-trio": (FASTAPI, "trio"),
    "aiohttp": (AIOHTTP, "asyncio"),
}


def _on(*names: str) -> pytest.MarkDecorator:
    return pytest.mark.parametrize(
        "setup", [_SETUPS[name] for name in names], ids=names, indirect=True
    )


BOTH = _on("fastapi", "aiohttp")
EVERYWHERE = _on("fastapi", "fastapi-trio", "aiohttp")


@pytest.fixture
def setup(request: pytest.FixtureRequest) -> tuple[Framework, str]:
    """The framework under test and the backend it runs on."""
    chosen: tuple[Framework, str] = request.param
    return chosen


@pytest.fixture
def anyio_backend(setup: tuple[Framework, str]) -> str:
    """Run on the backend of the parametrisation (aiohttp and aiosqlite need asyncio)."""
    return setup[1]


@pytest.fixture
def framework(setup: tuple[Framework, str]) -> Framework:
    """The framework under test."""
    return setup[0]


@pytest.fixture
def url(tmp_path: Path) -> str:
    """The URL of an SQLite file of the test's own."""
    return sqlite_url(tmp_path)


@pytest.fixture
def example_app(framework: Framework, url: str) -> Any:
    """The framework's example app, on the test's database."""
    return framework.example.create_app(url)


@pytest.fixture
def after_commit(framework: Framework) -> Iterator[list[str]]:
    """Record each AFTER_COMMIT post_save of the example's User, by email."""
    with recording_after_commit(framework.example.User) as seen:
        yield seen


# -- the example app, in process -------------------------------------------------------


async def sign_up(client: Client, email: str, name: str) -> Reply:
    """POST /users of the example app."""
    return await client.post("/users", json={"email": email, "name": name})


@BOTH
async def test_profile_is_created_after_commit_exactly_once(
    framework: Framework, example_app: Any, url: str, after_commit: list[str]
) -> None:
    """POST /users commits the user; the after-commit receiver creates one profile."""
    async with framework.serving(example_app) as client:
        created = await sign_up(client, "ada@example.com", "ada")
        assert created.status == 201, created.text
        user_id = created.json()["id"]
        read = await client.get(f"/users/{user_id}")
        assert read.status == 200
        assert read.json() == {
            "id": user_id,
            "email": "ada@example.com",
            "name": "ada",
            "profile": {"display_name": "Ada"},
        }
    assert after_commit == ["ada@example.com"]
    assert await count(url, framework.example.Profile, user_id=user_id) == 1


@BOTH
async def test_commit_and_after_commit_receivers_come_before_the_response(
    framework: Framework, example_app: Any, url: str, after_commit: list[str]
) -> None:
    """By the time the response starts, the user is committed and its profile exists."""
    example = framework.example
    seen_at_response: list[tuple[list[str], int, int]] = []

    async def spy(method: str) -> None:
        if method == "POST":
            # What another client could read at this instant.
            seen_at_response.append(
                (
                    list(after_commit),
                    await count(url, example.User),
                    await count(url, example.Profile),
                )
            )

    async with framework.serving(example_app, before_response=spy) as client:
        response = await sign_up(client, "bo@example.com", "bo")
        assert response.status == 201
    assert seen_at_response == [(["bo@example.com"], 1, 1)]


@BOTH
async def test_duplicate_email_is_409_and_creates_no_profile(
    framework: Framework, example_app: Any, url: str, after_commit: list[str]
) -> None:
    """A failing request (duplicate email, invalid body) rolls back: no second profile."""
    async with framework.serving(example_app) as client:
        first = await sign_up(client, "cy@example.com", "cy")
        assert first.status == 201
        second = await sign_up(client, "cy@example.com", "x")
        assert second.status == 409
        assert "cy@example.com is already registered" in second.text
        invalid = await client.post("/users", json={"email": "no name"})
        assert invalid.status == framework.invalid_status
        stats = (await client.get("/stats")).json()
    assert after_commit == ["cy@example.com"]
    assert await count(url, framework.example.User) == 1
    assert await count(url, framework.example.Profile) == 1
    assert stats["failed"] == 0


@BOTH
async def test_bus_is_reachable_from_handlers(framework: Framework, example_app: Any) -> None:
    """GET /stats reads the running bus; it delivered the welcome mails."""
    example, app = framework.example, example_app
    mailed: list[str] = []
    both_mailed = anyio.Event()

    async def after_mailer(sender: Any, payload: Any) -> None:
        mailed.append(payload.email)
        if len(mailed) == 2:
            both_mailed.set()

    example.user_signed_up.connect(after_mailer, priority=-1)  # after the example's mailer
    try:
        async with framework.serving(app) as client:
            for name in ("di", "ed"):
                body = {"email": f"{name}@x.org", "name": name}
                assert (await client.post("/users", json=body)).status == 201
            with anyio.fail_after(5):
                await both_mailed.wait()
            await anyio.wait_all_tasks_blocked()  # the workers have counted the deliveries
            stats = (await client.get("/stats")).json()
    finally:
        example.user_signed_up.disconnect(after_mailer)
    assert sorted(stats.pop("welcome_mails")) == ["di@x.org", "ed@x.org"]  # two workers
    assert stats == {"delivered": 2, "failed": 0, "pending": 0}


@BOTH
async def test_app_shutdown_drains_the_bus(framework: Framework, example_app: Any) -> None:
    """Events still queued at shutdown are delivered; then the bus refuses new ones."""
    example, app = framework.example, example_app
    gate = anyio.Event()
    held: list[str] = []
    two_held = anyio.Event()

    async def hold(sender: Any, payload: Any) -> None:
        held.append(payload.email)
        if len(held) == 2:
            two_held.set()
        await gate.wait()

    # Runs before the example's mailer, so nothing is mailed until the gate opens.
    example.user_signed_up.connect(hold, priority=1)
    try:
        async with framework.serving(app) as client:
            for name in ("fa", "gu", "ha"):
                response = await sign_up(client, f"{name}@x", name)
                assert response.status == 201
            with anyio.fail_after(5):
                await two_held.wait()  # both workers hold one event; the third waits
            await anyio.wait_all_tasks_blocked()
            bus = framework.bus(app)
            assert bus.pending == 1
            assert framework.welcome_mails(app) == []
            gate.set()  # no await until the shutdown: the drain does the delivering
    finally:
        example.user_signed_up.disconnect(hold)
    assert sorted(framework.welcome_mails(app)) == ["fa@x", "gu@x", "ha@x"]
    assert (bus.delivered, bus.undelivered) == (3, [])
    with pytest.raises(RuntimeError, match="has closed"):
        bus.publish_nowait(example.user_signed_up, None, example.UserSignedUp(user_id=1, email="z"))


# -- transactions ------------------------------------------------------------------------


@BOTH
async def test_a_failed_request_rolls_back(
    framework: Framework, url: str, after_commit: list[str]
) -> None:
    """An HTTP error or a bug after a write rolls back (after-rollback runs); others commit."""
    user_model = framework.example.User
    immediate: list[str] = []
    rolled_back: list[str] = []

    async def on_save(sender: Any, payload: PostSave[Any]) -> None:
        immediate.append(payload.instance.email)

    async def on_rollback(sender: Any, payload: PostSave[Any]) -> None:
        rolled_back.append(payload.instance.email)

    post_save.connect(on_save, sender=user_model)
    post_save.connect(on_rollback, sender=user_model, phase=Phase.AFTER_ROLLBACK)
    try:
        async with framework.serving(framework.app_with_transactions(Database(url))) as client:
            response = await client.post("/fail/x@y")
            assert response.status == 422
            assert "changed my mind" in response.text
            crashed = await client.post("/crash/z@y")
            assert crashed.status == 500
            ok = await client.post("/users/ok@y")
            assert ok.status == 201
    finally:
        post_save.disconnect(on_save, sender=user_model)
        post_save.disconnect(on_rollback, sender=user_model)
    assert immediate == ["x@y", "z@y", "ok@y"]  # each row was written and the signal sent...
    assert rolled_back == ["x@y", "z@y"]  # ...the failed ones rolled back
    assert after_commit == ["ok@y"]
    assert await count(url, user_model) == 1


# -- the bus -----------------------------------------------------------------------------


@EVERYWHERE
async def test_handlers_publish_to_the_apps_bus(framework: Framework) -> None:
    """Every handler gets the bus of the running app; shutdown delivers its events."""
    got: list[int] = []

    async def record(sender: Any, payload: Ping) -> None:
        got.append(payload.n)

    bus = EventBus(workers=1)
    app = framework.bare_app(bus=bus)
    with ping.connected_to(record):
        async with framework.serving(app) as client:
            ids = {(await client.post(f"/publish/{n}")).json() for n in range(5)}
            assert ids == {id(bus)}
            assert framework.bus(app) is bus
    assert got == [0, 1, 2, 3, 4]


@EVERYWHERE
async def test_a_bus_factory_makes_a_new_bus_at_each_startup(framework: Framework) -> None:
    """bus=factory is called at each startup; a factory of something else fails the startup."""
    made: list[EventBus] = []

    def new_bus() -> EventBus:
        made.append(EventBus(workers=2))
        return made[-1]

    app = framework.bare_app(bus=new_bus)
    for _ in range(2):
        async with framework.started(app):
            assert framework.bus(app) is made[-1]
            assert made[-1].running
        app = framework.bare_app(bus=new_bus)  # an aiohttp app starts once
    assert [bus.workers for bus in made] == [2, 2]
    assert not any(bus.running for bus in made)

    broken = framework.bare_app(bus=lambda: "no bus")
    with pytest.raises(TypeError, match="not an EventBus"):
        async with framework.started(broken):
            pass


@EVERYWHERE
async def test_a_used_bus_fails_the_startup(framework: Framework) -> None:
    """A bus that has already run cannot start again: the app's startup fails with why."""
    bus = EventBus()
    async with bus:
        pass
    with pytest.raises(RuntimeError, match="already been used"):
        async with framework.started(framework.bare_app(bus=bus)):
            pass


# -- services ----------------------------------------------------------------------------


@BOTH
async def test_services_run_the_outbox_relay(framework: Framework, url: str) -> None:
    """An OutboxRelay in services= delivers durable receivers while the app runs."""
    delivered: list[tuple[str, int]] = []
    arrived = anyio.Event()

    async def durable_welcome(sender: Any, payload: PostSave[Any]) -> None:
        delivery = current_delivery()
        assert delivery is not None
        delivered.append((payload.instance.email, delivery.attempt))
        arrived.set()

    uid = f"tests.{framework.name}.durable_welcome"
    post_save.connect(
        durable_welcome, sender=framework.example.User, durable=True, dispatch_uid=uid
    )
    try:
        db = Database(url)
        relay = OutboxRelay(db, poll_interval=0.05)
        app = framework.app_with_transactions(db, services=[relay])
        async with framework.serving(app) as client:
            assert (await client.post("/users/relay@y")).status == 201
            with anyio.fail_after(5):
                await arrived.wait()
    finally:
        post_save.disconnect(dispatch_uid=uid)
    assert delivered == [("relay@y", 1)]


@EVERYWHERE
async def test_services_start_in_order_and_stop_before_the_bus(framework: Framework) -> None:
    """Each service runs once the app started; at shutdown they are stopped, last first."""
    log: list[str] = []
    first, second = Recorder("first", log=log), Recorder("second", log=log)
    async with framework.started(framework.bare_app(services=[first, second])):
        assert log == ["first:run", "second:run"]
    assert log[:4] == ["first:run", "second:run", "second:stop", "first:stop"]
    assert sorted(log[4:]) == ["first:returned", "second:returned"]


class Farewell:
    """A Service that publishes one last event to the bus when it is stopped."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self._stopped = anyio.Event()

    async def run(self) -> None:
        await self._stopped.wait()
        await self.bus.publish(ping, None, Ping(n=99))

    def stop(self) -> None:
        self._stopped.set()


@EVERYWHERE
async def test_what_a_stopping_service_publishes_is_delivered(framework: Framework) -> None:
    """Services stop before the bus drains: an event a service publishes as it stops arrives."""
    got: list[int] = []

    async def record(sender: Any, payload: Ping) -> None:
        got.append(payload.n)

    bus = EventBus()
    with ping.connected_to(record):
        async with framework.started(framework.bare_app(bus=bus, services=[Farewell(bus)])):
            pass
    assert got == [99]
    assert bus.undelivered == []


@EVERYWHERE
async def test_a_service_ignoring_stop_is_cancelled_after_stop_timeout(
    framework: Framework, caplog: pytest.LogCaptureFixture
) -> None:
    """Shutdown does not hang on a service that ignores stop(): it is cancelled, and said so."""
    service = Recorder("slow", stubborn=True)
    async with framework.started(framework.bare_app(services=[service], stop_timeout=0.1)):
        await anyio.wait_all_tasks_blocked()
        start = anyio.current_time()
    assert service.events == ["run", "stop", "cancelled"]
    assert anyio.current_time() - start < 1
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "Recorder('slow')" in warning.getMessage()
    assert "0.1 s after stop()" in warning.getMessage()


class Broken:
    """A Service whose run() fails once the test says so, long after the app started."""

    def __init__(self) -> None:
        self.go = anyio.Event()

    async def run(self) -> None:
        await self.go.wait()
        raise OSError("relay lost its database")

    def stop(self) -> None:
        pass  # still called at shutdown: harmless on a service that has ended


@EVERYWHERE
async def test_a_failing_service_is_logged_and_the_bus_goes_on(
    framework: Framework, caplog: pytest.LogCaptureFixture
) -> None:
    """A service that raises once running is logged with its error; the app and bus go on."""
    got: list[int] = []

    async def record(sender: Any, payload: Ping) -> None:
        got.append(payload.n)

    broken = Broken()
    with ping.connected_to(record):
        async with framework.serving(framework.bare_app(services=[broken])) as client:
            broken.go.set()
            await anyio.wait_all_tasks_blocked()
            assert (await client.post("/publish/1")).status == 200
    assert got == [1]
    [failure] = [r for r in caplog.records if r.name == "aiosignals"]
    assert "Broken" in failure.getMessage()
    assert failure.exc_info is not None
    assert isinstance(failure.exc_info[1], OSError)


class FailsAtStart:
    """A Service whose run() fails straight away, as a consumer already running does."""

    async def run(self) -> None:
        raise ConnectionRefusedError("no broker at 127.0.0.1:1")

    def stop(self) -> None:
        pass


@EVERYWHERE
async def test_a_service_failing_at_start_fails_the_startup(framework: Framework) -> None:
    """The startup fails naming the service; the services started before it are stopped."""
    before, after = Recorder("before"), Recorder("after")
    app = framework.bare_app(services=[before, FailsAtStart(), after])
    with pytest.raises(RuntimeError, match=r"FailsAtStart.*failed at start.*no broker") as info:
        async with framework.started(app):
            pytest.fail("the app started")
    assert isinstance(info.value.__cause__, ConnectionRefusedError)
    assert before.events == ["run", "stop", "returned"]
    assert after.events == []


class FailsToStop(Recorder):
    """A Service whose stop() raises after it has asked run() to return."""

    def stop(self) -> None:
        super().stop()
        raise RuntimeError("stop() broke")


@EVERYWHERE
async def test_a_service_whose_stop_raises_is_logged_and_the_others_stop(
    framework: Framework, caplog: pytest.LogCaptureFixture
) -> None:
    """A stop() that raises is logged; the services before it are still stopped, not cancelled."""
    log: list[str] = []
    first, broken = Recorder("first", log=log), FailsToStop("broken", log=log)
    async with framework.started(framework.bare_app(services=[first, broken])):
        pass
    assert first.events == ["run", "stop", "returned"]
    assert broken.events == ["run", "stop", "returned"]
    [failure] = [r for r in caplog.records if r.name == "aiosignals"]
    assert "FailsToStop" in failure.getMessage() or "broken" in failure.getMessage()
    assert failure.exc_info is not None
    assert isinstance(failure.exc_info[1], RuntimeError)


@_on("fastapi", "fastapi-trio")
@pytest.mark.parametrize("with_services", [False, True], ids=["no-services", "services"])
async def test_an_error_inside_the_lifespan_comes_out_as_raised(
    framework: Framework, with_services: bool
) -> None:
    """An error raised inside the lifespan block comes out unwrapped; services stop gracefully."""
    service = Recorder("s")
    app = framework.bare_app(services=[service] if with_services else [])
    with pytest.raises(LookupError, match="the app's own"):
        async with framework.started(app):
            raise LookupError("the app's own")
    assert service.events == (["run", "stop", "returned"] if with_services else [])


@EVERYWHERE
async def test_relay_is_a_deprecated_alias_of_services(framework: Framework) -> None:
    """relay=service warns that it is deprecated, and runs the service all the same."""
    service = Recorder("relay")
    with pytest.warns(DeprecationWarning, match=r"services=\[relay\]") as warned:
        app = framework.bare_app(relay=service)
    assert warned[0].filename == frameworks_module.__file__  # the caller's line
    async with framework.started(app):
        assert service.events == ["run"]
    assert service.events == ["run", "stop", "returned"]


@pytest.mark.parametrize("framework", [FASTAPI, AIOHTTP], ids=["fastapi", "aiohttp"])
def test_services_must_be_a_list_of_services(framework: Framework) -> None:
    """One service instead of a list, or an object without run()/stop(), is refused at once."""
    service = Recorder()
    assert isinstance(service, Service)
    with pytest.raises(TypeError, match=r"services=\[Recorder"):
        framework.bare_app(services=service)
    with pytest.raises(TypeError, match="not a service: it needs async run"):
        framework.bare_app(services=[service, "not a service"])


@pytest.mark.parametrize("framework", [FASTAPI, AIOHTTP], ids=["fastapi", "aiohttp"])
@pytest.mark.parametrize(
    ("stop_timeout", "error"),
    [(-1, ValueError), (float("nan"), ValueError), (float("inf"), ValueError), (True, TypeError)],
)
def test_a_bad_stop_timeout_is_refused_at_once(
    framework: Framework, stop_timeout: object, error: type[Exception]
) -> None:
    """stop_timeout must be a finite number of seconds, checked when the app is built."""
    with pytest.raises(error, match="stop_timeout must be a"):
        framework.bare_app(stop_timeout=stop_timeout)


# -- as a user runs it -----------------------------------------------------------------


NAMES = pytest.mark.parametrize("name", ["fastapi", "aiohttp"])


@NAMES
def test_import_without_the_framework_names_the_extra(name: str) -> None:
    """Without the framework installed, importing the integration says which extra to install."""
    code = (
        f"import sys; sys.modules[{name!r}] = None\n"
        f"try:\n    import aiosignals.integrations.{name}\n"
        "except ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=EXAMPLES.parent,
    )
    assert f'pip install "aiosignals[{name}]"' in out.stdout


@NAMES
def test_example_check_mode(name: str) -> None:
    """`python examples/<name>_app.py --check` serves, exercises itself and exits 0."""
    result = run_example(f"{name}_app.py", "--check")
    assert result.returncode == 0, result.stderr
    assert "check passed" in result.stdout
    assert "welcome mails sent: ['ada@example.com']" in result.stdout


@pytest.mark.postgres
@NAMES
def test_example_check_mode_on_postgres(name: str, postgres_url: str) -> None:
    """The same app and checks on PostgreSQL (asyncpg), through DATABASE_URL."""
    result = run_example(f"{name}_app.py", "--check", env={"DATABASE_URL": postgres_url})
    assert result.returncode == 0, result.stderr
    assert "check passed" in result.stdout


@NAMES
def test_example_serves_in_a_process_of_its_own(name: str, tmp_path: Path) -> None:
    """Run as a server; requests over TCP; Ctrl-C drains the bus and exits 0."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / f"{name}_app.py"), str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=example_env(),
    )
    try:
        deadline = time.monotonic() + 20
        while True:  # the server only says it listens by accepting
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the server did not start"
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.05)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            created = client.post("/users", json={"email": "ux@example.com", "name": "ux"})
            assert created.status_code == 201, created.text
            read = client.get(f"/users/{created.json()['id']}")
            assert read.json()["profile"] == {"display_name": "Ux"}
            duplicate = client.post("/users", json={"email": "ux@example.com", "name": "ux"})
            assert duplicate.status_code == 409
    finally:
        process.send_signal(os_signal.SIGINT)
        _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    assert "shutdown: bus delivered=1 failed=0 undelivered=0 welcome_mails=1" in stderr
    assert (tmp_path / f"{name}_app.db").exists()  # the default SQLite file, in the cwd
