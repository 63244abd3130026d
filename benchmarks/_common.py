"""What the benchmarks share: the machine they report, and a throwaway PostgreSQL database."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["cpu_model", "describe", "load_average", "machine", "throwaway_postgres", "versions"]


def versions(names: Iterable[str]) -> str:
    """Return ``name version`` for each distribution, or that it is not installed."""
    found = []
    for name in names:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def cpu_model() -> str:
    """Return the CPU's model name, as /proc/cpuinfo gives it where there is one."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    """Return the 1, 5 and 15 minute load averages: a busy machine moves every figure."""
    try:
        return "load average %.2f %.2f %.2f" % os.getloadavg()  # noqa: UP031 -- a tuple
    except OSError:
        return "load average unknown"


def machine() -> str:
    """Return the platform, CPU, CPU count and Python of this run."""
    return (
        f"{platform.platform()}; {cpu_model()}; {os.cpu_count()} CPUs;"
        f" {platform.python_implementation()} {platform.python_version()}"
    )


@asynccontextmanager
async def throwaway_postgres(prefix: str) -> AsyncIterator[str]:
    """Create a database on the test server and yield its asyncpg URL; drop it after."""
    import asyncpg

    server = os.environ.get("AIOSIGNALS_TEST_POSTGRES_URL")
    if not server:
        raise SystemExit("--postgres needs AIOSIGNALS_TEST_POSTGRES_URL: `source /tmp/svc.env`")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    parts = urlsplit(server)
    try:
        yield urlunsplit(("postgresql+asyncpg", parts.netloc, f"/{name}", "", ""))
    finally:
        admin = await asyncpg.connect(server)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await admin.close()


async def describe(db: Any) -> str:
    """Name the database server of *db* (an aiosignals Database) and what makes it fast or slow."""
    import sqlalchemy as sa

    async with db.engine.connect() as connection:
        if db.is_sqlite:
            version = await connection.scalar(sa.text("select sqlite_version()"))
            journal = await connection.scalar(sa.text("pragma journal_mode"))
            sync = await connection.scalar(sa.text("pragma synchronous"))
            return f"SQLite {version} (journal_mode={journal}, synchronous={sync}), aiosqlite"
        version = await connection.scalar(sa.text("show server_version"))
        fsync = await connection.scalar(sa.text("show fsync"))
        commit = await connection.scalar(sa.text("show synchronous_commit"))
        return f"PostgreSQL {version} (fsync={fsync}, synchronous_commit={commit}), asyncpg"
