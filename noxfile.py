"""
Sessions: ``tests`` (the CI suite; queues ``tests_arq``), ``lint``, ``typing``, ``examples``,
``docs``, ``bench``.
"""

from __future__ import annotations

import os
import re
import shutil

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests", "lint", "typing"]

PYPROJECT = nox.project.load_toml("pyproject.toml")


def _group(name: str) -> list[str]:
    return list(nox.project.dependency_groups(PYPROJECT, name))


def _pick(group: str, *names: str) -> list[str]:
    """The requirements of dependency group *group* for the distributions *names*."""
    return [req for req in _group(group) if re.split(r"[\[<>=!~;\s]", req, maxsplit=1)[0] in names]


def redis_floor() -> str:
    """The lowest redis-py the ``redis`` extra allows, pinned: ``redis==5.0.1`` for ``>=5.0.1``."""
    (requirement,) = PYPROJECT["project"]["optional-dependencies"]["redis"]
    name, floor = requirement.split(">=")
    return f"{name}=={floor}"


# Modules only a Redis server exercises: the transport and the `aiosignals consume` command.
REDIS_ONLY = ["aiosignals/transports/redis/*", "aiosignals/transports/_cli.py"]


def coverage_report_args(env: dict[str, str], redis_server_binary: str | None) -> list[str]:
    """
    Return the ``coverage report`` arguments for a run with the servers *env* names.

    The bar is 90%, read to two decimals (``precision = 2`` in pyproject), so no run passes
    by rounding 89.9 up. With Redis (a URL, or the redis-server binary the tests start a
    private server from), every module counts. Without it the Redis modules cannot run at
    all: they are left out of the report, named, instead of being hidden in a lower total;
    the rest must still reach 90% (95.45% here with no server at all). PostgreSQL-only code
    is small and stays counted either way. CI sets AIOSIGNALS_REQUIRE_SERVICES=1, so there a
    missing server fails the tests before this matters.
    """
    args = ["--fail-under=90"]
    if not env.get("AIOSIGNALS_TEST_REDIS_URL") and redis_server_binary is None:
        args.append(f"--omit={','.join(REDIS_ONLY)}")
    return args


@nox.session
def tests(session: nox.Session) -> None:
    """
    Run the whole test suite (asyncio and trio) with every extra installed, then tests_arq.

    ``tests_arq`` needs an environment of its own; it is queued here so that this session,
    the README's and CI's one command, runs it too. A run narrowed by arguments
    (``nox -s tests -- tests/test_signal.py``) does not queue it.
    """
    if not session.posargs:
        session.notify("tests_arq")
    # The docs group too: tests/test_docs.py builds the site, so CI catches a page that rots.
    session.install("-e", ".[all]", *_group("tests"), *_group("docs"))
    session.run("coverage", "erase")
    session.run("coverage", "run", "-m", "pytest", *session.posargs)
    session.run("coverage", "combine", success_codes=[0, 1])
    report = coverage_report_args(dict(os.environ), shutil.which("redis-server"))
    if any(arg.startswith("--omit") for arg in report):
        session.warn(f"no Redis: {', '.join(REDIS_ONLY)} left out of the coverage report")
    session.run("coverage", "report", *report)


# The arq recipe's tests, and the Redis transport's: these are the ones redis-py 5 can break.
ARQ_TESTS = [
    "tests/transports/test_arq.py",
    "tests/test_readme.py",  # its `# requires: arq` blocks (marked arq)
    "tests/transports/redis",
]


@nox.session
def tests_arq(session: nox.Session) -> None:
    """
    The arq hand-off recipe, and the Redis transport on the ``redis`` extra's floor.

    arq pins redis<6 while taskiq-redis (in the tests group) needs redis>=8, so arq cannot
    join the ``tests`` environment. This one has the package with the extras the recipe
    needs, arq, and the lowest redis-py the ``redis`` extra allows, so the floor is tested
    too. ``AIOSIGNALS_REQUIRE_ARQ=1`` turns a missing arq into a failure, not a skip. No
    coverage is measured here: the ``tests`` session's bar is met on its own.
    """
    session.install(
        "-e", ".[sqlalchemy,redis]", "arq>=0.26", redis_floor(),
        *_pick("tests", "pytest", "pytest-asyncio", "trio"),
    )  # fmt: skip
    session.run(
        "pytest", "-m", "arq or redis", *ARQ_TESTS, *session.posargs,
        env={"AIOSIGNALS_REQUIRE_ARQ": "1"},
    )  # fmt: skip


@nox.session
def tests_minimal(session: nox.Session) -> None:
    """
    The core with only its two runtime dependencies: no extra may be needed to import it.

    It checks importability and the core's behaviour without extras; coverage is the `tests`
    session's job, so this one has no bar that rounding could pass.
    """
    session.install("-e", ".", "pytest", "pytest-asyncio", "trio")
    session.run(
        "pytest",
        "tests/test_signal.py",
        "tests/test_policies.py",
        "tests/test_context.py",
        "tests/test_phases.py",
        "tests/test_exports.py",
        "tests/test_testing.py",
        "tests/test_inspect.py",
        "tests/test_bus.py",
        "tests/test_threads.py",
        "tests/test_asyncio_runner.py",
        *session.posargs,
    )


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff lint and format check."""
    session.install(*_group("lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typing(session: nox.Session) -> None:
    """mypy --strict and pyright on the package, tests and examples; mypy on the docs' code."""
    session.install("-e", ".[all]", *_group("typing"))
    session.run("mypy")
    session.run("pyright")
    # Each python block of the README and docs/, a file of its own, through mypy --strict.
    session.run("pytest", "-q", "tests/test_readme.py::test_every_block_passes_mypy_strict")


@nox.session
def examples(session: nox.Session) -> None:
    """Run every example and README block as a user would, with the `examples` extra."""
    session.install("-e", ".[examples]", *_group("tests"))
    session.run("pytest", "-q", "tests/test_examples.py", "tests/test_readme.py", *session.posargs)


@nox.session(reuse_venv=False)
def docs(session: nox.Session) -> None:
    """Build the documentation site into site/, strictly: any warning fails the build."""
    # A fresh environment with the docs group only: mkdocstrings reads the package's source
    # (docs_dir and paths in mkdocs.yml), it does not import it. Nothing is fetched at build
    # time: no web fonts, no remote inventories, no social cards.
    session.install(*_group("docs"))
    # Quiet Material's end-of-life banner: the build's own warnings still fail it.
    session.env["NO_MKDOCS_2_WARNING"] = "1"
    session.run("mkdocs", "build", "--strict", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Dispatch speed against the peers, and the repository/outbox/transport benchmarks."""
    session.install("-e", ".[all]", *_group("bench"))
    session.run("python", "benchmarks/dispatch.py", *session.posargs)
    # The others need no server on SQLite; --postgres / --redis runs are in benchmarks/README.md.
    session.run("python", "benchmarks/repository.py", *session.posargs)
    session.run("python", "benchmarks/sessions.py", *session.posargs)
    session.run("python", "benchmarks/outbox.py", *session.posargs)
