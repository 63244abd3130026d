"""
One driver per web framework, so that one suite (``test_lifecycle.py``) tests both.

Each driver builds the apps the tests need (a bare one, one with transactions, the
example's) and serves them, through the same few calls: the tests speak to a
:class:`Client` and read :class:`Reply` objects, whatever the framework.
"""

# No `from __future__ import annotations`: FastAPI reads handler annotations at run time,
# and the handlers here are annotated with dependencies on a database local to the app.

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Annotated, Any, Protocol

import httpx
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from fastapi import FastAPI, HTTPException
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.types import Message, Receive, Scope, Send

from aiosignals import Event, EventBus, Signal
from aiosignals.integrations import aiohttp as aiohttp_integration
from aiosignals.integrations import fastapi as fastapi_integration
from aiosignals.repository.sqlalchemy import Database, SQLAlchemyRepository

from . import load_example

__all__ = ["AIOHTTP", "FASTAPI", "Client", "Framework", "Ping", "Reply", "ping"]


class Ping(Event):
    n: int


ping = Signal(Ping)
"""What the apps' ``POST /publish/{n}`` publishes to the bus."""

BeforeResponse = Callable[[str], Awaitable[None]]
"""Called with the request's method just before its response starts."""


@dataclass(frozen=True)
class Reply:
    """A response, read whole."""

    status: int
    text: str

    def json(self) -> Any:
        """The body, parsed as JSON."""
        return json.loads(self.text)


class Client(Protocol):
    """Talks HTTP to a served app."""

    async def get(self, path: str) -> Reply: ...

    async def post(self, path: str, json: Any = None) -> Reply: ...


class Framework(Protocol):
    """What the shared suite needs of a framework."""

    name: str
    example: ModuleType
    """The example app of this framework (``examples/<name>_app.py``)."""
    invalid_status: int
    """The status of a request whose body fails validation."""

    def bare_app(self, **options: Any) -> Any:
        """An app running the integration with *options*, with ``POST /publish/{n}``."""
        ...

    def app_with_transactions(self, db: Database, **options: Any) -> Any:
        """An app whose handlers commit, fail, crash or publish, on the example's models."""
        ...

    def serving(
        self, app: Any, *, before_response: BeforeResponse | None = None
    ) -> AbstractAsyncContextManager[Client]:
        """Start *app* (startup and shutdown included) and yield a client of it."""
        ...

    def started(self, app: Any) -> AbstractAsyncContextManager[None]:
        """Run *app*'s startup on entry and its shutdown on exit, serving nothing."""
        ...

    def bus(self, app: Any) -> EventBus:
        """The bus the running *app* hands its handlers."""
        ...

    def welcome_mails(self, app: Any) -> list[str]:
        """The welcome mails the example app sent."""
        ...


# -- FastAPI ---------------------------------------------------------------------------


class _HttpxClient:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def get(self, path: str) -> Reply:
        response = await self._client.get(path)
        return Reply(response.status_code, response.text)

    async def post(self, path: str, json: Any = None) -> Reply:
        response = await self._client.post(path, json=json)
        return Reply(response.status_code, response.text)


class _FastAPI:
    name = "fastapi"
    example = load_example("fastapi_app")
    invalid_status = 422

    def bare_app(self, **options: Any) -> FastAPI:
        app = FastAPI(lifespan=fastapi_integration.lifespan(**options))

        @app.post("/publish/{n}")
        async def publish(n: int, bus: fastapi_integration.DepBus) -> int:
            await bus.publish(ping, None, Ping(n=n))
            return id(bus)

        return app

    def app_with_transactions(self, db: Database, **options: Any) -> FastAPI:
        user_model = self.example.User
        users = SQLAlchemyRepository(user_model, db)
        Transaction = Annotated[AsyncSession, fastapi_integration.transaction_dependency(db)]

        @asynccontextmanager
        async def app_lifespan(app: FastAPI) -> AsyncIterator[None]:
            async with db:
                await db.create_all(self.example.Base.metadata)
                async with fastapi_integration.lifespan(**options)(app):
                    yield

        app = FastAPI(lifespan=app_lifespan)

        @app.post("/users/{email}", status_code=201)
        async def create(email: str, tx: Transaction) -> int:
            assert tx is db.current_session()  # the handler runs in the dependency's transaction
            user = await users.add(user_model(email=email, name=email))
            assert user.id is not None
            return int(user.id)

        # As dependencies=[...] too: the transaction wraps the handler all the same.
        in_transaction = [fastapi_integration.transaction_dependency(db)]

        @app.post("/fail/{email}", dependencies=in_transaction)
        async def fail(email: str) -> None:
            await users.add(user_model(email=email, name=email))
            raise HTTPException(422, "changed my mind")

        @app.post("/crash/{email}", dependencies=in_transaction)
        async def crash(email: str) -> None:
            await users.add(user_model(email=email, name=email))
            raise RuntimeError("handler bug")

        @app.post("/publish/{n}")
        async def publish(n: int, bus: fastapi_integration.DepBus) -> int:
            await bus.publish(ping, None, Ping(n=n))
            return id(bus)

        return app

    @asynccontextmanager
    async def serving(
        self, app: FastAPI, *, before_response: BeforeResponse | None = None
    ) -> AsyncIterator[Client]:
        async def spy(scope: Scope, receive: Receive, send: Send) -> None:
            async def spying_send(message: Message) -> None:
                if message["type"] == "http.response.start" and before_response is not None:
                    await before_response(scope["method"])
                await send(message)

            await app(scope, receive, spying_send)

        # A handler's bug is a 500 for the client, as a server would answer.
        transport = httpx.ASGITransport(app=spy, raise_app_exceptions=False)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://test") as client,
        ):
            yield _HttpxClient(client)

    def started(self, app: FastAPI) -> AbstractAsyncContextManager[None]:
        @asynccontextmanager
        async def lifespan() -> AsyncIterator[None]:
            async with app.router.lifespan_context(app):
                yield

        return lifespan()

    def bus(self, app: FastAPI) -> EventBus:
        bus: EventBus = getattr(app.state, fastapi_integration.BUS_STATE)
        return bus

    def welcome_mails(self, app: FastAPI) -> list[str]:
        mails: list[str] = app.state.welcome_mails
        return mails


# -- aiohttp ---------------------------------------------------------------------------


class _AiohttpClient:
    def __init__(self, client: TestClient[web.Request, web.Application]) -> None:
        self._client = client

    async def get(self, path: str) -> Reply:
        async with self._client.get(path) as response:
            return Reply(response.status, await response.text())

    async def post(self, path: str, json: Any = None) -> Reply:
        async with self._client.post(path, json=json) as response:
            return Reply(response.status, await response.text())


class _Aiohttp:
    name = "aiohttp"
    example = load_example("aiohttp_app")
    invalid_status = 400

    def bare_app(self, **options: Any) -> web.Application:
        app = web.Application()
        aiohttp_integration.init_app(app, **options)
        app.router.add_post("/publish/{n}", _publish)
        return app

    def app_with_transactions(self, db: Database, **options: Any) -> web.Application:
        user_model = self.example.User
        users = SQLAlchemyRepository(user_model, db)
        get_session = aiohttp_integration.get_session

        async def database(app: web.Application) -> AsyncIterator[None]:
            async with db:
                await db.create_all(self.example.Base.metadata)
                yield

        async def create(request: web.Request) -> web.Response:
            assert db.current_session() is not None  # POST: inside the middleware's transaction
            user = await users.add(user_model(email=request.match_info["email"], name="n"))
            return web.json_response(user.id, status=201)

        async def fail(request: web.Request) -> web.Response:
            await users.add(user_model(email=request.match_info["email"], name="n"))
            raise web.HTTPUnprocessableEntity(text="changed my mind")

        async def crash(request: web.Request) -> web.Response:
            await users.add(user_model(email=request.match_info["email"], name="n"))
            raise RuntimeError("handler bug")

        async def read(request: web.Request) -> web.Response:
            return web.json_response({"in_transaction": db.current_session() is not None})

        async def add(request: web.Request) -> web.Response:
            get_session(request).add(user_model(email=request.match_info["email"], name="n"))
            return web.json_response("added", status=201)

        async def session_of_read(request: web.Request) -> web.Response:
            try:
                get_session(request)
            except LookupError as error:
                return web.json_response(str(error))
            return web.json_response("a session")

        app = web.Application(middlewares=[aiohttp_integration.transaction_middleware(db)])
        app.cleanup_ctx.append(database)
        aiohttp_integration.init_app(app, **options)
        app.router.add_post("/users/{email}", create)
        app.router.add_post("/fail/{email}", fail)
        app.router.add_post("/crash/{email}", crash)
        app.router.add_get("/read", read)
        app.router.add_post("/add/{email}", add)
        app.router.add_get("/session", session_of_read)
        app.router.add_post("/publish/{n}", _publish)
        return app

    @asynccontextmanager
    async def serving(
        self, app: web.Application, *, before_response: BeforeResponse | None = None
    ) -> AsyncIterator[Client]:
        if before_response is not None:

            async def spy(request: web.Request, response: web.StreamResponse) -> None:
                await before_response(request.method)

            app.on_response_prepare.append(spy)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            yield _AiohttpClient(client)

    @asynccontextmanager
    async def started(self, app: web.Application) -> AsyncIterator[None]:
        runner = web.AppRunner(app)
        try:
            await runner.setup()
            yield
        finally:
            await runner.cleanup()

    def bus(self, app: web.Application) -> EventBus:
        return aiohttp_integration.get_bus(app)

    def welcome_mails(self, app: web.Application) -> list[str]:
        mails: list[str] = app[self.example.WELCOME_MAILS]
        return mails


async def _publish(request: web.Request) -> web.Response:
    bus = aiohttp_integration.get_bus(request)
    await bus.publish(ping, None, Ping(n=int(request.match_info["n"])))
    return web.json_response(id(bus))


FASTAPI: Framework = _FastAPI()
AIOHTTP: Framework = _Aiohttp()
