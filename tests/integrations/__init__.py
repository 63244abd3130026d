"""
Tests of the web framework integrations, and helpers they share.

The example apps live in ``examples/`` (not a package): :func:`load_example` imports one by
path, once per test session, so that its models and signals are defined a single time.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio

from aiosignals import Phase
from aiosignals.models import PostSave, post_save
from aiosignals.repository.sqlalchemy import Database, SQLAlchemyRepository
from tests._servers import example_env, free_port

EXAMPLES = Path(__file__).parents[2] / "examples"


def sqlite_url(tmp_path: Path) -> str:
    """The URL of an SQLite file of one test's own."""
    return f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"


async def count(url: str, model: Any, **filters: Any) -> int:
    """Count committed rows through a connection of its own, as another process would."""
    async with Database(url) as other:
        return len(await SQLAlchemyRepository(model, other).list(**filters))


@contextmanager
def recording_after_commit(user_model: Any) -> Iterator[list[str]]:
    """Record each AFTER_COMMIT post_save of *user_model*, by email, inside the block."""
    seen: list[str] = []

    async def record(sender: Any, payload: PostSave[Any]) -> None:
        seen.append(payload.instance.email)

    post_save.connect(record, sender=user_model, phase=Phase.AFTER_COMMIT)
    try:
        yield seen
    finally:
        post_save.disconnect(record, sender=user_model)


def run_example(
    script: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``examples/<script>`` with *args* to completion, as a user would."""
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=EXAMPLES.parent,
        env=example_env(**(env or {})),
    )


def run_python(code: str) -> str:
    """Run *code* in a new interpreter from the project's root and return what it printed."""
    command = [sys.executable, "-c", code]
    done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=EXAMPLES.parent)
    return done.stdout


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` as the module ``examples_<name>`` and return it."""
    module_name = f"examples_{name}"
    loaded = sys.modules.get(module_name)
    if loaded is not None:
        return loaded
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered before running it: pydantic resolves the models' annotations through it.
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


__all__ = [
    "EXAMPLES",
    "Recorder",
    "count",
    "example_env",
    "free_port",
    "load_example",
    "recording_after_commit",
    "run_example",
    "run_python",
    "sqlite_url",
]


class Recorder:
    """A Service that records its life; a stubborn one ignores stop()."""

    def __init__(
        self, name: str = "", *, log: list[str] | None = None, stubborn: bool = False
    ) -> None:
        self.name = name
        self.events: list[str] = []
        self.log = log if log is not None else []
        """Events of several recorders in the order they came, as "name:event"."""
        self.stubborn = stubborn
        self._stopped = anyio.Event()

    def __repr__(self) -> str:
        return f"Recorder({self.name!r})"

    def _record(self, event: str) -> None:
        self.events.append(event)
        self.log.append(f"{self.name}:{event}")

    async def run(self) -> None:
        self._record("run")
        try:
            if self.stubborn:
                await anyio.sleep_forever()
            await self._stopped.wait()
            self._record("returned")
        except BaseException:
            self._record("cancelled")
            raise

    def stop(self) -> None:
        self._record("stop")
        self._stopped.set()
