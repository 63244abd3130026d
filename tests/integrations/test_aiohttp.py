from __future__ import annotations

import signal as os_signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import anyio.lowlevel
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from aiosignals import Event, EventBus, Phase, Signal
from aiosignals.integrations.aiohttp import (
    BUS_KEY,
    get_bus,
    get_session,
    init_app,
    transaction_middleware,
)
from aiosignals.models import PostSave, post_save
from aiosignals.outbox import OutboxRelay, current_delivery
from aiosignals.repository.sqlalchemy import Database, SQLAlchemyRepository

from . import (
    EXAMPLES,
    Recorder,
    count,
    example_env,
    free_port,
    load_example,
    recording_after_commit,
    run_example,
    sqlite_url,
)

example = load_example("aiohttp_app")
User: Any = example.User
Profile: Any = example.Profile
ROOT = EXAMPLES.parent

Client = TestClient[web.Request, web.Application]


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[Client]:
    """Start *app* on a loopback port (startup, cleanup included) and yield a client."""
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


@pytest.fixture
def after_commit() -> Iterator[list[str]]:
    """Record each AFTER_COMMIT post_save of the example's User, by email."""
    with recording_after_commit(User) as seen:
        yield seen


# -- the example app -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_profile_is_created_after_commit_exactly_once(
    tmp_path: Path, after_commit: list[str]
) -> None:
    """POST /users commits the user; the after-commit receiver creates one profile."""
    url = sqlite_url(tmp_path)
    async with serving(example.create_app(url)) as client:
        created = await client.post("/users", json={"email": "ada@example.com", "name": "ada"})
        assert created.status == 201, await created.text()
        user_id = (await created.json())["id"]
        read = await client.get(f"/users/{user_id}")
        assert read.status == 200
        assert await read.json() == {
            "id": user_id,
            "email": "ada@example.com",
            "name": "ada",
            "profile": {"display_name": "Ada"},
        }
    assert after_commit == ["ada@example.com"]
    assert await count(url, Profile, user_id=user_id) == 1


@pytest.mark.asyncio
async def test_commit_and_after_commit_receivers_come_before_the_response(
    tmp_path: Path, after_commit: list[str]
) -> None:
    """By the time the response is prepared, the user is committed and its profile exists."""
    url = sqlite_url(tmp_path)
    app = example.create_app(url)
    seen_at_response: list[tuple[list[str], int, int]] = []

    async def spy(request: web.Request, response: web.StreamResponse) -> None:
        if request.method == "POST":
            # What another client could read at this instant.
            seen_at_response.append(
                (list(after_commit), await count(url, User), await count(url, Profile))
            )

    app.on_response_prepare.append(spy)
    async with serving(app) as client:
        response = await client.post("/users", json={"email": "bo@example.com", "name": "bo"})
        assert response.status == 201
    assert seen_at_response == [(["bo@example.com"], 1, 1)]


@pytest.mark.asyncio
async def test_duplicate_email_is_409_and_creates_no_profile(
    tmp_path: Path, after_commit: list[str]
) -> None:
    """A failing request (duplicate email) rolls back: no profile, no after-commit receiver."""
    url = sqlite_url(tmp_path)
    async with serving(example.create_app(url)) as client:
        first = await client.post("/users", json={"email": "cy@example.com", "name": "cy"})
        assert first.status == 201
        second = await client.post("/users", json={"email": "cy@example.com", "name": "x"})
        assert second.status == 409
        assert await second.text() == "cy@example.com is already registered"
        invalid = await client.post("/users", json={"email": "no name"})
        assert invalid.status == 400
    assert after_commit == ["cy@example.com"]
    assert await count(url, User) == 1
    assert await count(url, Profile) == 1


@pytest.mark.asyncio
async def test_bus_is_reachable_from_handlers(tmp_path: Path) -> None:
    """GET /stats reads the running bus through get_bus(request); it sent the welcome mails."""
    app = example.create_app(sqlite_url(tmp_path))
    mailed: list[str] = []
    both_mailed = anyio.Event()

    async def after_mailer(sender: Any, payload: Any) -> None:
        mailed.append(payload.email)
        if len(mailed) == 2:
            both_mailed.set()

    example.user_signed_up.connect(after_mailer, priority=-1)
    try:
        async with serving(app) as client:
            for name in ("di", "ed"):
                body = {"email": f"{name}@x.org", "name": name}
                assert (await client.post("/users", json=body)).status == 201
            with anyio.fail_after(5):
                await both_mailed.wait()
            await anyio.wait_all_tasks_blocked()  # the workers have counted the deliveries
            stats = await (await client.get("/stats")).json()
            assert app[BUS_KEY] is get_bus(app)
    finally:
        example.user_signed_up.disconnect(after_mailer)
    assert sorted(stats.pop("welcome_mails")) == ["di@x.org", "ed@x.org"]  # two workers
    assert stats == {"delivered": 2, "failed": 0, "pending": 0}


@pytest.mark.asyncio
async def test_app_cleanup_drains_the_bus(tmp_path: Path) -> None:
    """Events still queued at cleanup are delivered before the app has stopped."""
    app = example.create_app(sqlite_url(tmp_path))
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
        async with serving(app) as client:
            for name in ("fa", "gu", "ha"):
                response = await client.post("/users", json={"email": f"{name}@x", "name": name})
                assert response.status == 201
            with anyio.fail_after(5):
                await two_held.wait()  # both workers hold one event; the third waits
            await anyio.wait_all_tasks_blocked()
            bus = app[BUS_KEY]
            assert bus.pending == 1
            assert app[example.WELCOME_MAILS] == []
            gate.set()  # no await until the cleanup: the drain does the delivering
    finally:
        example.user_signed_up.disconnect(hold)
    assert sorted(app[example.WELCOME_MAILS]) == ["fa@x", "gu@x", "ha@x"]
    assert (bus.delivered, bus.undelivered) == (3, [])
    with pytest.raises(RuntimeError, match="has closed"):
        bus.publish_nowait(example.user_signed_up, User, example.UserSignedUp(user_id=1, email="z"))


# -- the integration pieces ------------------------------------------------------------


class Ping(Event):
    n: int


ping = Signal(Ping)


def app_with_transactions(db: Database, **init_options: Any) -> web.Application:
    """A small app on the example's models: handlers that commit, fail, crash, read, publish."""
    users = SQLAlchemyRepository(User, db)

    async def database(app: web.Application) -> AsyncIterator[None]:
        async with db:
            await db.create_all(example.Base.metadata)
            yield

    async def create(request: web.Request) -> web.Response:
        assert db.current_session() is not None  # POST: inside the middleware's transaction
        user = await users.add(User(email=request.match_info["email"], name="n"))
        return web.json_response(user.id, status=201)

    async def fail(request: web.Request) -> web.Response:
        await users.add(User(email=request.match_info["email"], name="n"))
        raise web.HTTPUnprocessableEntity(text="changed my mind")

    async def crash(request: web.Request) -> web.Response:
        await users.add(User(email=request.match_info["email"], name="n"))
        raise RuntimeError("handler bug")

    async def read(request: web.Request) -> web.Response:
        return web.json_response({"in_transaction": db.current_session() is not None})

    async def add(request: web.Request) -> web.Response:
        get_session(request).add(User(email=request.match_info["email"], name="n"))
        return web.json_response("added", status=201)

    async def session_of_read(request: web.Request) -> web.Response:
        try:
            get_session(request)
        except LookupError as error:
            return web.json_response(str(error))
        return web.json_response("a session")

    async def publish(request: web.Request) -> web.Response:
        await get_bus(request).publish(ping, None, Ping(n=int(request.match_info["n"])))
        return web.json_response(id(get_bus(request)))

    app = web.Application(middlewares=[transaction_middleware(db)])
    app.cleanup_ctx.append(database)
    init_app(app, **init_options)
    app.router.add_post("/users/{email}", create)
    app.router.add_post("/fail/{email}", fail)
    app.router.add_post("/crash/{email}", crash)
    app.router.add_get("/read", read)
    app.router.add_post("/add/{email}", add)
    app.router.add_get("/session", session_of_read)
    app.router.add_post("/publish/{n}", publish)
    return app


@pytest.mark.asyncio
async def test_a_handler_writes_with_the_instrumented_session_of_the_request(
    tmp_path: Path, after_commit: list[str]
) -> None:
    """get_session(request).add(...) sends post_save, committed with the request."""
    url = sqlite_url(tmp_path)
    async with serving(app_with_transactions(Database(url))) as client:
        added = await client.post("/add/sam@x")
        assert added.status == 201, await added.text()
        assert after_commit == ["sam@x"]
        outside = await (await client.get("/session")).json()
        assert "runs without a transaction" in outside
    assert await count(url, User, email="sam@x") == 1


@pytest.mark.asyncio
async def test_http_exception_after_a_write_rolls_back(
    tmp_path: Path, after_commit: list[str]
) -> None:
    """A handler raising an HTTP error after saving: rolled back, after-rollback ran."""
    url = sqlite_url(tmp_path)
    immediate: list[str] = []
    rolled_back: list[str] = []

    async def on_save(sender: Any, payload: PostSave[Any]) -> None:
        immediate.append(payload.instance.email)

    async def on_rollback(sender: Any, payload: PostSave[Any]) -> None:
        rolled_back.append(payload.instance.email)

    post_save.connect(on_save, sender=User)
    post_save.connect(on_rollback, sender=User, phase=Phase.AFTER_ROLLBACK)
    try:
        async with serving(app_with_transactions(Database(url))) as client:
            response = await client.post("/fail/x@y")
            assert response.status == 422
            assert await response.text() == "changed my mind"
            crashed = await client.post("/crash/z@y")
            assert crashed.status == 500
            ok = await client.post("/users/ok@y")
            assert ok.status == 201
    finally:
        post_save.disconnect(on_save, sender=User)
        post_save.disconnect(on_rollback, sender=User)
    assert immediate == ["x@y", "z@y", "ok@y"]  # each row was written and the signal sent...
    assert rolled_back == ["x@y", "z@y"]  # ...the failed ones rolled back
    assert after_commit == ["ok@y"]
    assert await count(url, User) == 1


@pytest.mark.asyncio
async def test_reads_run_without_a_transaction(tmp_path: Path) -> None:
    """GET is not wrapped (SQLite would queue reads behind writers); methods= changes that."""
    async with serving(app_with_transactions(Database(sqlite_url(tmp_path)))) as client:
        assert await (await client.get("/read")).json() == {"in_transaction": False}
    db = Database(sqlite_url(tmp_path))
    app = app_with_transactions(db)
    app.middlewares[0] = transaction_middleware(db, methods=["get"])
    async with serving(app) as client:
        assert await (await client.get("/read")).json() == {"in_transaction": True}


@pytest.mark.asyncio
async def test_handlers_publish_to_the_apps_bus(tmp_path: Path) -> None:
    """get_bus(request) is the app's bus, also from a sub-application; cleanup delivers."""
    got: list[int] = []

    async def record(sender: Any, payload: Ping) -> None:
        got.append(payload.n)

    ping.connect(record)
    bus = EventBus()
    app = app_with_transactions(Database(sqlite_url(tmp_path)), bus=bus)
    sub = web.Application()

    async def from_sub(request: web.Request) -> web.Response:
        return web.json_response(id(get_bus(request)))

    sub.router.add_get("/bus", from_sub)
    app.add_subapp("/sub", sub)
    try:
        async with serving(app) as client:
            ids = {await (await client.post(f"/publish/{n}")).json() for n in range(5)}
            ids.add(await (await client.get("/sub/bus")).json())
            assert ids == {id(bus)}
    finally:
        ping.disconnect(record)
    assert got == [0, 1, 2, 3, 4]


@pytest.mark.asyncio
async def test_get_bus_without_init_app_is_a_clear_error() -> None:
    """Asking for the bus of an app without init_app says what to do."""
    with pytest.raises(RuntimeError, match=r"no EventBus is running.*init_app"):
        get_bus(web.Application())


@pytest.mark.asyncio
async def test_a_used_bus_fails_the_startup() -> None:
    """A bus that has already run cannot start again: the app's startup fails with why."""
    bus = EventBus()
    async with bus:
        pass
    app = web.Application()
    init_app(app, bus=bus)
    runner = web.AppRunner(app)
    with pytest.raises(RuntimeError, match="already been used"):
        await runner.setup()
    await runner.cleanup()


@pytest.mark.asyncio
async def test_init_app_runs_the_outbox_relay(tmp_path: Path) -> None:
    """The relay given to init_app() delivers durable receivers while the app runs."""
    url = sqlite_url(tmp_path)
    delivered: list[tuple[str, int]] = []
    arrived = anyio.Event()

    async def durable_welcome(sender: Any, payload: PostSave[Any]) -> None:
        delivery = current_delivery()
        assert delivery is not None
        delivered.append((payload.instance.email, delivery.attempt))
        arrived.set()

    post_save.connect(
        durable_welcome, sender=User, durable=True, dispatch_uid="tests.aiohttp.durable_welcome"
    )
    try:
        db = Database(url)
        app = app_with_transactions(db, relay=OutboxRelay(db, poll_interval=0.05))
        async with serving(app) as client:
            assert (await client.post("/users/relay@y")).status == 201
            with anyio.fail_after(5):
                await arrived.wait()
    finally:
        post_save.disconnect(dispatch_uid="tests.aiohttp.durable_welcome")
    assert delivered == [("relay@y", 1)]


@pytest.mark.asyncio
async def test_init_app_starts_and_stops_a_service_with_the_app() -> None:
    """The service runs once the app started and is stopped (and returns) at cleanup."""
    service = Recorder()
    app = web.Application()
    init_app(app, relay=service)
    async with serving(app):
        assert service.events == ["run"]
    assert service.events == ["run", "stop", "returned"]


@pytest.mark.asyncio
async def test_a_service_ignoring_stop_is_cancelled_after_stop_timeout() -> None:
    """Cleanup does not hang on a service that ignores stop(): it is cancelled in time."""
    service = Recorder(stubborn=True)
    app = web.Application()
    init_app(app, relay=service, stop_timeout=0.1)
    async with serving(app):
        await anyio.wait_all_tasks_blocked()
        start = anyio.current_time()
    assert service.events == ["run", "stop", "cancelled"]
    assert anyio.current_time() - start < 1


class Broken:
    """A Service whose run() fails once started."""

    async def run(self) -> None:
        await anyio.lowlevel.checkpoint()
        raise OSError("relay lost its database")

    def stop(self) -> None:
        pass  # still called at shutdown: harmless on a service that has ended


@pytest.mark.asyncio
async def test_a_failing_service_is_logged_and_the_bus_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A relay that raises is logged with its error; the app and its bus keep working."""
    got: list[int] = []

    async def record(sender: Any, payload: Ping) -> None:
        got.append(payload.n)

    ping.connect(record)
    try:
        app = app_with_transactions(Database(sqlite_url(tmp_path)), relay=Broken())
        async with serving(app) as client:
            await anyio.wait_all_tasks_blocked()
            assert (await client.post("/publish/1")).status == 200
    finally:
        ping.disconnect(record)
    assert got == [1]
    [failure] = [r for r in caplog.records if r.name == "aiosignals"]
    assert "Broken" in failure.getMessage()
    assert failure.exc_info is not None
    assert isinstance(failure.exc_info[1], OSError)


# -- as a user runs it -----------------------------------------------------------------


def test_import_without_aiohttp_names_the_extra() -> None:
    """Without aiohttp installed, importing the integration says which extra to install."""
    code = (
        "import sys; sys.modules['aiohttp'] = None\n"
        "try:\n    import aiosignals.integrations.aiohttp\n"
        "except ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert 'pip install "aiosignals[aiohttp]"' in out.stdout


def test_example_check_mode() -> None:
    """`python examples/aiohttp_app.py --check` serves, exercises itself and exits 0."""
    result = run_example("aiohttp_app.py", "--check")
    assert result.returncode == 0, result.stderr
    assert "check passed" in result.stdout
    assert "welcome mails sent: ['ada@example.com']" in result.stdout


@pytest.mark.postgres
def test_example_check_mode_on_postgres(postgres_url: str) -> None:
    """The same app and checks on PostgreSQL (asyncpg), through DATABASE_URL."""
    result = run_example("aiohttp_app.py", "--check", env={"DATABASE_URL": postgres_url})
    assert result.returncode == 0, result.stderr
    assert "check passed" in result.stdout


def test_example_serves_with_run_app(tmp_path: Path) -> None:
    """Run as a server in a process of its own; requests over TCP; Ctrl-C drains and exits 0."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "aiohttp_app.py"), str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=example_env(),
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the server did not start"
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.05)
        created, profile, duplicate = anyio.run(exercise, port)
        assert created == 201
        assert profile == {"display_name": "Ux"}
        assert duplicate == 409
    finally:
        process.send_signal(os_signal.SIGINT)
        stdout, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    assert "shutdown: bus delivered=1 failed=0 undelivered=0 welcome_mails=1" in stderr
    assert (tmp_path / "aiohttp_app.db").exists()  # the default SQLite file, in the cwd
    del stdout


async def exercise(port: int) -> tuple[int, Any, int]:
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as client:
        body = {"email": "ux@example.com", "name": "ux"}
        async with client.post("/users", json=body) as created:
            user_id = (await created.json())["id"]
        async with client.get(f"/users/{user_id}") as read:
            profile = (await read.json())["profile"]
        async with client.post("/users", json=body) as duplicate:
            return created.status, profile, duplicate.status


@pytest.mark.asyncio
async def test_a_bus_factory_is_called_at_startup() -> None:
    """init_app(bus=factory) calls it at each startup; a factory of something else fails it."""
    made: list[EventBus] = []

    def new_bus() -> EventBus:
        made.append(EventBus(workers=2))
        return made[-1]

    for _ in range(2):
        app = web.Application()
        init_app(app, bus=new_bus)
        runner = web.AppRunner(app)
        await runner.setup()
        assert get_bus(app) is made[-1]
        assert made[-1].running
        await runner.cleanup()
    assert len(made) == 2
    assert not any(bus.running for bus in made)

    broken = web.Application()
    init_app(broken, bus=lambda: "no bus")  # type: ignore[arg-type,return-value]
    runner = web.AppRunner(broken)
    with pytest.raises(TypeError, match="not an EventBus"):
        await runner.setup()
    await runner.cleanup()
