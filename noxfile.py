"""Sessions: ``nox -s tests`` (the CI suite), ``lint``, ``typing``, ``docs``, ``bench``."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests", "lint", "typing"]

PYPROJECT = nox.project.load_toml("pyproject.toml")


def _group(name: str) -> list[str]:
    return list(nox.project.dependency_groups(PYPROJECT, name))


@nox.session
def tests(session: nox.Session) -> None:
    """Run the whole test suite (asyncio and trio) with every extra installed."""
    # The docs group too: tests/test_docs.py builds the site, so CI catches a page that rots.
    session.install("-e", ".[all]", *_group("tests"), *_group("docs"))
    session.run("coverage", "erase")
    session.run("coverage", "run", "-m", "pytest", *session.posargs)
    session.run("coverage", "combine", success_codes=[0, 1])
    session.run("coverage", "report", "--fail-under=90")


@nox.session
def tests_minimal(session: nox.Session) -> None:
    """The core with only its two runtime dependencies: no extra may be needed to import it."""
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
        "tests/test_fastpath.py",
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
    """mypy --strict and pyright on the package and the typed usage file; mypy on the docs' code."""
    session.install("-e", ".[all]", *_group("typing"))
    session.run("mypy")
    session.run("pyright")
    # The code blocks of the README and docs/, as a reader copies them: strictly typed too.
    blocks = f"{session.create_tmp()}/doc_blocks"
    session.run("python", "scripts/doc_blocks.py", blocks)
    session.run("mypy", blocks)


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
    session.run("python", "benchmarks/outbox.py", *session.posargs)
