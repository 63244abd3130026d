# No `from __future__ import annotations`: FastAPI reads handler annotations at run time,
# and some handlers here are annotated with dependencies on a database local to the test.

import signal as os_signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import anyio
import anyio.lowlevel
import httpx
import pytest
from fastapi import FastAPI, HTTPException, Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aiosignals import Event, EventBus, Phase, Signal
from aiosignals.integrations.fastapi import DepBus, lifespan, transaction_dependency
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

example = load_example("fastapi_app")
User: Any = example.User
Profile: Any = example.Profile
ROOT = EXAMPLES.parent


@asynccontextmanager
async def serving(app: FastAPI, asgi: ASGIApp | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """Run *app*'s lifespan and yield a client talking to it (through *asgi*, if given)."""
    transport = httpx.ASGITransport(app=asgi or app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        yield client


@pytest.fixture
def after_commit() -> Iterator[list[str]]:
    """Record each AFTER_COMMIT post_save of the example's User, by email."""
    with recording_after_commit(User) as seen:
        yield seen


# -- the example app, in process -------------------------------------------------------


@pytest.mark.asyncio
async def test_profile_is_created_after_commit_exactly_once(
    tmp_path: Path, after_commit: list[str]
) -> None:
    """POST /users commits the user; the after-commit receiver creates one profile."""
    url = sqlite_url(tmp_path)
    app = example.create_app(url)
    async with serving(app) as client:
        created = await client.post("/users", json={"email": "ada@example.com", "name": "ada"})
        assert created.status_code == 201, created.text
        user_id = created.json()["id"]
        read = await client.get(f"/users/{user_id}")
        assert read.status_code == 200
        assert read.json() == {
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
    """By the time the response starts, the user is committed and its profile exists."""
    url = sqlite_url(tmp_path)
    app = example.create_app(url)
    seen_at_response: list[tuple[list[str], int, int]] = []

    async def spy(scope: Scope, receive: Receive, send: Send) -> None:
        async def spying_send(message: Message) -> None:
            if message["type"] == "http.response.start" and scope["method"] == "POST":
                # What another client could read at this instant.
                seen_at_response.append(
                    (list(after_commit), await count(url, User), await count(url, Profile))
                )
            await send(message)

        await app(scope, receive, spying_send)

    async with serving(app, spy) as client:
        response = await client.post("/users", json={"email": "bo@example.com", "name": "bo"})
        assert response.status_code == 201
    assert seen_at_response == [(["bo@example.com"], 1, 1)]


@pytest.mark.asyncio
async def test_duplicate_email_is_409_and_creates_no_profile(
    tmp_path: Path, after_commit: list[str]
) -> None:
    """A failing request (duplicate email) rolls back: no profile, no after-commit receiver."""
    url = sqlite_url(tmp_path)
    app = example.create_app(url)
    async with serving(app) as client:
        first = await client.post("/users", json={"email": "cy@example.com", "name": "cy"})
        assert first.status_code == 201
        second = await client.post("/users", json={"email": "cy@example.com", "name": "other"})
        assert second.status_code == 409
        assert second.json() == {"detail": "cy@example.com is already registered"}
        stats = (await client.get("/stats")).json()
    assert after_commit == ["cy@example.com"]
    assert await count(url, User) == 1
    assert await count(url, Profile) == 1
    assert stats["failed"] == 0


@pytest.mark.asyncio
async def test_bus_is_reachable_from_handlers(tmp_path: Path) -> None:
    """GET /stats reads the running bus through DepBus; it delivered the welcome mails."""
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
                response = await client.post(
                    "/users", json={"email": f"{name}@x.org", "name": name}
                )
                assert response.status_code == 201
            with anyio.fail_after(5):
                await both_mailed.wait()
            await anyio.wait_all_tasks_blocked()  # the workers have counted the deliveries
            stats = (await client.get("/stats")).json()
    finally:
        example.user_signed_up.disconnect(after_mailer)
    assert sorted(stats.pop("welcome_mails")) == ["di@x.org", "ed@x.org"]  # two workers
    assert stats == {"delivered": 2, "failed": 0, "pending": 0}


@pytest.mark.asyncio
async def test_app_shutdown_drains_the_bus(tmp_path: Path) -> None:
    """Events still queued at shutdown are delivered before the lifespan ends."""
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
                assert response.status_code == 201
            with anyio.fail_after(5):
                await two_held.wait()  # both workers hold one event; the third waits
            await anyio.wait_all_tasks_blocked()
            bus: EventBus = app.state.aiosignals_bus
            assert bus.pending == 1
            assert app.state.welcome_mails == []
            gate.set()  # no await until the lifespan exit: the drain does the delivering
    finally:
        example.user_signed_up.disconnect(hold)
    assert sorted(app.state.welcome_mails) == ["fa@x", "gu@x", "ha@x"]
    assert bus.delivered == 3
    assert bus.undelivered == []


# -- the integration pieces ------------------------------------------------------------


class Ping(Event):
    n: int


ping = Signal(Ping)


def app_with_transactions(db: Database, **lifespan_options: Any) -> FastAPI:
    """A small app on the example's models: handlers that commit, fail, crash or publish."""
    users = SQLAlchemyRepository(User, db)

    @asynccontextmanager
    async def app_lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with db:
            await db.create_all(example.Base.metadata)
            async with lifespan(**lifespan_options)(app):
                yield

    app = FastAPI(lifespan=app_lifespan)

    @app.post("/users/{email}", status_code=201)
    async def create(email: str, tx: Annotated[AsyncSession, transaction_dependency(db)]) -> int:
        assert tx is db.current_session()  # the handler runs in the dependency's transaction
        user = await users.add(User(email=email, name=email))
        assert user.id is not None
        return int(user.id)

    @app.post("/fail/{email}", dependencies=[transaction_dependency(db)])
    async def fail(email: str) -> None:
        await users.add(User(email=email, name=email))
        raise HTTPException(422, "changed my mind")

    @app.post("/crash/{email}", dependencies=[transaction_dependency(db)])
    async def crash(email: str) -> None:
        await users.add(User(email=email, name=email))
        raise RuntimeError("handler bug")

    @app.post("/publish/{n}")
    async def publish(n: int, bus: DepBus) -> int:
        await bus.publish(ping, None, Ping(n=n))
        return id(bus)

    return app


@pytest.mark.asyncio
async def test_http_exception_after_a_write_rolls_back(
    tmp_path: Path, after_commit: list[str]
) -> None:
    """A handler raising HTTPException after saving: rolled back, after-rollback ran, no commit."""
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
            assert response.status_code == 422
            assert response.json() == {"detail": "changed my mind"}
    finally:
        post_save.disconnect(on_save, sender=User)
        post_save.disconnect(on_rollback, sender=User)
    assert immediate == ["x@y"]  # the row was written and the signal sent...
    assert rolled_back == ["x@y"]  # ...then rolled back
    assert after_commit == []
    assert await count(url, User) == 0


@pytest.mark.asyncio
async def test_unhandled_error_rolls_back_and_answers_500(
    tmp_path: Path, after_commit: list[str]
) -> None:
    """A handler bug is a 500 and leaves nothing committed."""
    url = sqlite_url(tmp_path)
    app = app_with_transactions(Database(url))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        response = await client.post("/crash/z@y")
        assert response.status_code == 500
        ok = await client.post("/users/ok@y")
        assert ok.status_code == 201
    assert after_commit == ["ok@y"]
    assert await count(url, User) == 1


@pytest.mark.asyncio
async def test_handlers_publish_to_the_apps_bus(tmp_path: Path) -> None:
    """DepBus hands every handler the bus of the running app; shutdown delivers its events."""
    got: list[int] = []

    async def record(sender: Any, payload: Ping) -> None:
        got.append(payload.n)

    ping.connect(record)
    app = app_with_transactions(Database(sqlite_url(tmp_path)), bus=EventBus(workers=1))
    try:
        async with serving(app) as client:
            ids = {(await client.post(f"/publish/{n}")).json() for n in range(5)}
            bus = app.state.aiosignals_bus
            assert ids == {id(bus)}
    finally:
        ping.disconnect(record)
    assert got == [0, 1, 2, 3, 4]
    assert not hasattr(app.state, "aiosignals_bus")  # a stopped app hands out no bus


@pytest.mark.asyncio
async def test_dep_bus_without_lifespan_is_a_clear_error() -> None:
    """A handler asking for the bus of an app started without the lifespan gets told why."""
    app = FastAPI()

    @app.get("/")
    async def handler(bus: DepBus) -> None: ...

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        with pytest.raises(RuntimeError, match=r"no EventBus is running.*lifespan"):
            await client.get("/")


@pytest.mark.asyncio
async def test_lifespan_runs_the_outbox_relay(tmp_path: Path) -> None:
    """The relay given to lifespan() delivers durable receivers while the app runs."""
    url = sqlite_url(tmp_path)
    delivered: list[tuple[str, int]] = []
    arrived = anyio.Event()

    async def durable_welcome(sender: Any, payload: PostSave[Any]) -> None:
        delivery = current_delivery()
        assert delivery is not None
        delivered.append((payload.instance.email, delivery.attempt))
        arrived.set()

    post_save.connect(
        durable_welcome, sender=User, durable=True, dispatch_uid="tests.fastapi.durable_welcome"
    )
    try:
        db = Database(url)
        app = app_with_transactions(db, relay=OutboxRelay(db, poll_interval=0.05))
        async with serving(app) as client:
            assert (await client.post("/users/relay@y")).status_code == 201
            with anyio.fail_after(5):
                await arrived.wait()
    finally:
        post_save.disconnect(dispatch_uid="tests.fastapi.durable_welcome")
    assert delivered == [("relay@y", 1)]


@pytest.mark.anyio
async def test_lifespan_starts_and_stops_a_service_with_the_app() -> None:
    """The service runs once the app started and is stopped before the bus drains."""
    service = Recorder()
    app = FastAPI(lifespan=lifespan(relay=service))
    async with app.router.lifespan_context(app):
        await anyio.wait_all_tasks_blocked()
        assert service.events == ["run"]
    assert service.events == ["run", "stop", "returned"]


@pytest.mark.anyio
async def test_a_service_ignoring_stop_is_cancelled_after_stop_timeout() -> None:
    """Shutdown does not hang on a service that ignores stop(): it is cancelled in time."""
    service = Recorder(stubborn=True)
    app = FastAPI(lifespan=lifespan(relay=service, stop_timeout=0.1))
    async with app.router.lifespan_context(app):
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


@pytest.mark.anyio
async def test_a_failing_service_is_logged_and_the_bus_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A relay that raises is logged with its error; the app and its bus keep working."""
    got: list[int] = []

    async def record(sender: Any, payload: Ping) -> None:
        got.append(payload.n)

    app = FastAPI(lifespan=lifespan(relay=Broken()))

    @app.post("/{n}")
    async def publish(n: int, bus: DepBus) -> None:
        await bus.publish(ping, None, Ping(n=n))

    with ping.connected_to(record):
        async with serving(app) as client:
            await anyio.wait_all_tasks_blocked()
            assert (await client.post("/1")).status_code == 200
    assert got == [1]
    [failure] = [r for r in caplog.records if r.name == "aiosignals"]
    assert "Broken" in failure.getMessage()
    assert failure.exc_info is not None
    assert isinstance(failure.exc_info[1], OSError)


@pytest.mark.anyio
async def test_lifespan_and_dep_bus_on_asyncio_and_trio() -> None:
    """The lifespan and DepBus use anyio only: a Starlette app on trio gets its bus too."""
    got: list[int] = []

    async def record(sender: Any, payload: Ping) -> None:
        got.append(payload.n)

    app = FastAPI(lifespan=lifespan())

    @app.post("/{n}")
    async def publish(n: int, bus: DepBus) -> None:
        bus.publish_nowait(ping, None, Ping(n=n))

    with ping.connected_to(record):
        async with serving(app) as client:
            for n in range(3):
                assert (await client.post(f"/{n}")).status_code == 200
    assert got == [0, 1, 2]


# -- as a user runs it -----------------------------------------------------------------


def test_import_without_fastapi_names_the_extra() -> None:
    """Without FastAPI installed, importing the integration says which extra to install."""
    code = (
        "import sys; sys.modules['fastapi'] = None\n"
        "try:\n    import aiosignals.integrations.fastapi\n"
        "except ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert 'pip install "aiosignals[fastapi]"' in out.stdout


def test_import_aiosignals_does_not_import_the_integrations() -> None:
    """import aiosignals loads neither the integrations nor the frameworks."""
    code = (
        "import sys, aiosignals, aiosignals.integrations\n"
        "print([m for m in ('fastapi', 'starlette', 'aiohttp', 'aiosignals.integrations.fastapi')"
        " if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"


def test_example_check_mode() -> None:
    """`python examples/fastapi_app.py --check` serves, exercises itself and exits 0."""
    result = run_example("fastapi_app.py", "--check")
    assert result.returncode == 0, result.stderr
    assert "check passed" in result.stdout
    assert "welcome mails sent: ['ada@example.com']" in result.stdout


@pytest.mark.postgres
def test_example_check_mode_on_postgres(postgres_url: str) -> None:
    """The same app and checks on PostgreSQL (asyncpg), through DATABASE_URL."""
    result = run_example("fastapi_app.py", "--check", env={"DATABASE_URL": postgres_url})
    assert result.returncode == 0, result.stderr
    assert "check passed" in result.stdout


def test_example_serves_under_uvicorn(tmp_path: Path) -> None:
    """Run as a server in a process of its own; requests over TCP; Ctrl-C drains and exits 0."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "fastapi_app.py"), str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=example_env(),
    )
    try:
        deadline = time.monotonic() + 20
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            while True:
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "the server did not start"
                try:
                    client.get("/docs")
                    break
                except httpx.TransportError:
                    time.sleep(0.05)
            created = client.post("/users", json={"email": "ux@example.com", "name": "ux"})
            assert created.status_code == 201, created.text
            read = client.get(f"/users/{created.json()['id']}")
            assert read.json()["profile"] == {"display_name": "Ux"}
            duplicate = client.post("/users", json={"email": "ux@example.com", "name": "ux"})
            assert duplicate.status_code == 409
    finally:
        process.send_signal(os_signal.SIGINT)
        stdout, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    assert "shutdown: bus delivered=1 failed=0 undelivered=0 welcome_mails=1" in stderr
    assert (tmp_path / "fastapi_app.db").exists()  # the default SQLite file, in the cwd
    del stdout


# -- bus factories, restarts, mounted sub-apps ------------------------------------------


@asynccontextmanager
async def under_uvicorn(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Serve *app* with uvicorn (which passes the lifespan state on) and yield a client."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    async with anyio.create_task_group() as group:
        group.start_soon(server.serve)
        with anyio.fail_after(10):
            while not server.started:  # uvicorn only exposes a flag
                await anyio.sleep(0.01)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                yield client
        finally:
            server.should_exit = True


@pytest.mark.asyncio
async def test_the_example_app_starts_twice(tmp_path: Path) -> None:
    """The example builds its bus at each startup: a second lifespan run works too."""
    app = example.create_app(sqlite_url(tmp_path))
    # Served for real, twice: each run's bus delivers its welcome mail.
    for run in range(2):
        async with under_uvicorn(app) as client:
            created = await client.post("/users", json={"email": f"u{run}@x.org", "name": "u"})
            assert created.status_code == 201, created.text
    assert app.state.welcome_mails == ["u0@x.org", "u1@x.org"]


@pytest.mark.asyncio
async def test_a_bus_factory_makes_a_new_bus_at_each_startup() -> None:
    """lifespan(factory) calls it at each startup; a factory of something else is refused."""
    made: list[EventBus] = []

    def new_bus() -> EventBus:
        made.append(EventBus(workers=2))
        return made[-1]

    app = FastAPI(lifespan=lifespan(new_bus))

    @app.get("/bus")
    async def which(bus: DepBus) -> int:
        return made.index(bus)

    for run in range(2):
        async with under_uvicorn(app) as client:
            assert (await client.get("/bus")).json() == run
    assert [bus.workers for bus in made] == [2, 2]
    assert not any(bus.running for bus in made)

    broken = FastAPI(lifespan=lifespan(lambda: "no bus"))  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="not an EventBus"):
        async with broken.router.lifespan_context(broken):
            pass


@pytest.mark.asyncio
async def test_dep_bus_works_in_a_mounted_sub_app() -> None:
    """The bus travels in the lifespan state: a mounted app's handlers (never started) get it."""
    api = FastAPI()

    @api.get("/ping")
    async def ping(bus: DepBus) -> bool:
        return bus.running

    @asynccontextmanager
    async def own_lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        # A lifespan of one's own around ours, merging its state with the bus's.
        async with lifespan()(app) as state:
            yield {**state, "mine": 1}

    main = FastAPI(lifespan=own_lifespan)

    @main.get("/mine")
    async def mine(bus: DepBus, request: Request) -> int:
        assert bus.running
        value: int = request.state.mine
        return value

    main.mount("/api", api)
    async with under_uvicorn(main) as client:
        assert (await client.get("/api/ping")).json() is True
        assert (await client.get("/mine")).json() == 1
