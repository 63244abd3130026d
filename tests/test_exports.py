from __future__ import annotations

import importlib

import pytest

import aiosignals

PUBLIC_MODULES = [
    "aiosignals",
    "aiosignals.exceptions",
    "aiosignals.integrations.aiohttp",
    "aiosignals.integrations.fastapi",
    "aiosignals.models",
    "aiosignals.outbox",
    "aiosignals.pytest_plugin",
    "aiosignals.repository",
    "aiosignals.repository.sqlalchemy",
    "aiosignals.sqlalchemy",
    "aiosignals.testing",
    "aiosignals.transports",
    "aiosignals.transports.redis",
]


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_is_sorted_and_complete(name: str) -> None:
    """Each public module's __all__ is sorted and every name in it exists."""
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        # The minimal session runs without the extras: a module that says which extra it
        # needs is skipped there. Any other import failure is a failure.
        if "pip install" not in str(exc):
            raise
        pytest.skip(str(exc))
    # The order ruff's RUF022 keeps: CONSTANTS, then Classes, then functions, each sorted.
    assert list(module.__all__) == sorted(
        module.__all__,
        key=lambda name: (0 if name.isupper() else 1 if name[:1].isupper() else 2, name),
    )
    for attribute in module.__all__:
        assert hasattr(module, attribute), attribute


def test_public_names_come_from_private_modules() -> None:
    """Every public class or function of the top level is defined in a private module."""
    for attribute in aiosignals.__all__:
        value = getattr(aiosignals, attribute)
        module = getattr(value, "__module__", None)
        if isinstance(module, str) and module.startswith("aiosignals"):
            assert module == "aiosignals.exceptions" or module.split(".")[-1].startswith("_")


def test_import_aiosignals_imports_no_integration() -> None:
    """import aiosignals loads none of the optional integrations or backends."""
    import subprocess
    import sys

    code = (
        "import sys, aiosignals; "
        "bad = [m for m in ('sqlalchemy', 'redis', 'fastapi', 'aiohttp', 'opentelemetry') "
        "if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_service_is_the_protocol_of_anything_run_with_an_app() -> None:
    """aiosignals.Service matches any object with async run() and stop(), and nothing else."""

    class Worker:
        async def run(self) -> None: ...

        def stop(self) -> None: ...

    assert isinstance(Worker(), aiosignals.Service)
    assert not isinstance(object(), aiosignals.Service)
