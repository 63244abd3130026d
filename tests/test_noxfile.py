"""The coverage bar of ``nox -s tests`` holds without rounding, with or without servers."""

from __future__ import annotations

import functools
import importlib.util
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).parent.parent


@functools.cache
def _noxfile() -> ModuleType:
    # Once per process: nox refuses a session registered twice.
    spec = importlib.util.spec_from_file_location("noxfile", ROOT / "noxfile.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_noxfile() -> ModuleType:
    pytest.importorskip("nox")
    return _noxfile()


def test_the_coverage_bar_is_read_to_two_decimals() -> None:
    """89.86% fails a 90% bar: the report's precision leaves nothing to rounding."""
    from coverage.results import should_fail_under

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    precision = config["tool"]["coverage"]["report"]["precision"]
    assert should_fail_under(89.86, 90, precision)
    assert not should_fail_under(90.0, 90, precision)


@pytest.mark.parametrize(
    ("env", "binary", "omitted"),
    [
        ({"AIOSIGNALS_TEST_REDIS_URL": "redis://127.0.0.1:1/0"}, None, False),
        ({}, "/usr/bin/redis-server", False),
        ({}, None, True),
    ],
)
def test_only_a_run_without_redis_leaves_the_redis_modules_out(
    env: dict[str, str], binary: str | None, omitted: bool
) -> None:
    """Without any Redis the Redis-only modules are omitted by name; the bar stays 90%."""
    args = load_noxfile().coverage_report_args(env, binary)
    assert "--fail-under=90" in args
    omit = [arg for arg in args if arg.startswith("--omit=")]
    assert bool(omit) is omitted
    if omitted:
        assert "aiosignals/transports/redis/*" in omit[0]


class RecordingSession:
    """Stands in for a nox session: records what a session function asks of it."""

    def __init__(self, *posargs: str) -> None:
        self.posargs = list(posargs)
        self.env: dict[str, str] = {}
        self.installed: list[str] = []
        self.runs: list[tuple[tuple[str, ...], dict[str, Any]]] = []
        self.notified: list[str] = []

    def install(self, *args: str) -> None:
        self.installed.extend(args)

    def run(self, *args: str, **kwargs: Any) -> None:
        self.runs.append((args, kwargs))

    def notify(self, target: str, posargs: list[str] | None = None) -> None:
        self.notified.append(target)

    def warn(self, *args: object) -> None:
        pass


def test_the_readme_command_runs_the_arq_session_too() -> None:
    """`nox -s tests` queues tests_arq; a run narrowed to some tests does not."""
    noxfile = load_noxfile()
    whole = RecordingSession()
    noxfile.tests(whole)
    assert whole.notified == ["tests_arq"]
    narrowed = RecordingSession("tests/test_signal.py")
    noxfile.tests(narrowed)
    assert narrowed.notified == []


def test_the_arq_session_has_arq_and_the_redis_extras_floor_and_requires_arq() -> None:
    """tests_arq installs arq and the redis extra's floor, no taskiq-redis, and requires arq."""
    session = RecordingSession()
    load_noxfile().tests_arq(session)
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (redis_extra,) = config["project"]["optional-dependencies"]["redis"]
    assert redis_extra.replace(">=", "==") in session.installed
    assert any(requirement.startswith("arq") for requirement in session.installed)
    assert not any(requirement.startswith("taskiq") for requirement in session.installed)
    ((args, kwargs),) = session.runs
    assert args[:3] == ("pytest", "-m", "arq or redis")
    assert "tests/transports/test_arq.py" in args
    assert kwargs["env"] == {"AIOSIGNALS_REQUIRE_ARQ": "1"}
