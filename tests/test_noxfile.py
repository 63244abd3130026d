"""The coverage bar of ``nox -s tests`` holds without rounding, with or without servers."""

from __future__ import annotations

import functools
import importlib.util
import tomllib
from pathlib import Path
from types import ModuleType

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
