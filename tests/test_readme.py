"""
Every ``python`` block of the README and of the documentation site runs, as a program would.

A block whose first line is ``# test_<name>.py`` is a test module: pytest runs it. A block
whose first line is ``# not run: <reason>`` is a fragment the reader sees as such: it is
skipped with that reason (keep them rare). A block whose first line is ``# requires: arq``
needs arq, which cannot share the main test environment: it runs in ``nox -s tests_arq``
(marked ``arq``) and is skipped elsewhere. A block that mentions ``REDIS_URL`` gets the test
Redis server (and a stream prefix of its own), one that mentions ``DATABASE_URL`` a fresh
PostgreSQL database. ``console`` blocks are transcripts: each ``$ aiosignals ...`` command
runs from the repository's root and must print what the block shows.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests._servers import require_arq

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SKIP = "# not run: "
NEEDS_ARQ = "# requires: arq"


def _blocks(language: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for page in PAGES:
        text = page.read_text()
        name = page.relative_to(ROOT).as_posix()
        pattern = rf"^```{language}\n(.*?)^```"
        found.extend(
            (f"{name}:{n}", block)
            for n, block in enumerate(re.findall(pattern, text, flags=re.S | re.M), 1)
        )
    return found


BLOCKS = _blocks("python")
TRANSCRIPTS = _blocks("console")
RUNS = [
    pytest.param(
        name, block, id=name, marks=[pytest.mark.arq] if block.startswith(NEEDS_ARQ) else []
    )
    for name, block in BLOCKS
]


def test_the_pages_have_python_blocks() -> None:
    """The README and the site pages hold runnable examples, found by the runner."""
    assert len(BLOCKS) >= 20
    assert any(name.startswith("README.md") for name, _ in BLOCKS)


def test_no_block_escapes_the_runner() -> None:
    """Every fenced python block starts at column 0, so the runner above finds each one."""
    for page in PAGES:
        for line in page.read_text().splitlines():
            if line.lstrip().startswith("```python"):
                assert line == "```python", f"{page.name}: indented or annotated fence {line!r}"


@pytest.mark.parametrize(("name", "block"), RUNS)
def test_block_runs(name: str, block: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Each python block of the docs runs alone in a fresh interpreter and exits 0."""
    # Each block is a complete program, run in a fresh interpreter: a block that only works
    # after another one would mislead a reader who copies it alone.
    first_line = block.split("\n", 1)[0]
    if first_line.startswith(SKIP):
        reason = first_line.removeprefix(SKIP)
        assert reason.strip(), f"{name}: a skipped block says why"
        pytest.skip(reason)
    if first_line == NEEDS_ARQ:
        require_arq()
    is_test_module = first_line.startswith("# test_")
    filename = first_line[2:].split(",")[0].split()[0] if is_test_module else "block.py"
    script = tmp_path / filename
    script.write_text(block)
    command = (
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(script)]
        if is_test_module
        else [sys.executable, str(script)]
    )
    # Without a shell's DATABASE_URL / REDIS_URL (scripts/services.sh exports them).
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    if "REDIS_URL" in block:
        env["REDIS_URL"] = request.getfixturevalue("redis_server_url")
        env["STREAM_PREFIX"] = request.getfixturevalue("stream_prefix")
    if "DATABASE_URL" in block:
        env["DATABASE_URL"] = request.getfixturevalue("postgres_url")
    if "NATS_URL" in block:
        env["NATS_URL"] = request.getfixturevalue("nats_url")
        env["STREAM_PREFIX"] = request.getfixturevalue("nats_prefix")
    result = subprocess.run(
        command,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"{name}:\n{block}\n{result.stdout}\n{result.stderr}"


def _commands(transcript: str) -> list[tuple[str, str]]:
    """Split a console transcript into (command, expected output) pairs."""
    pairs: list[tuple[str, list[str]]] = []
    for line in transcript.splitlines():
        if line.startswith("$ "):
            pairs.append((line[2:], []))
        else:
            assert pairs, f"output before any command: {line!r}"
            pairs[-1][1].append(line)
    return [(command, "\n".join(output)) for command, output in pairs]


@pytest.mark.parametrize(("name", "transcript"), TRANSCRIPTS, ids=[n for n, _ in TRANSCRIPTS])
def test_transcript_matches(name: str, transcript: str) -> None:
    """Each `$ aiosignals ...` of a console block exits 0 and prints exactly the lines shown."""
    # A transcript shows what a command prints: it runs, and prints exactly that.
    for command, expected in _commands(transcript):
        argv = shlex.split(command)
        assert argv[0] == "aiosignals", f"{name}: only aiosignals commands run here: {command}"
        result = subprocess.run(
            [sys.executable, "-m", "aiosignals", *argv[1:]],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, f"{name}: {command}\n{result.stderr}"
        assert result.stdout.rstrip("\n") == expected, f"{name}: {command}"


def test_every_block_passes_mypy_strict(tmp_path: Path) -> None:
    """The docs claim strict typing: each block, as a user would copy it, passes mypy."""
    # mypy is in the tests group (CI runs this); importorskip serves a bare local venv.
    mypy_api = pytest.importorskip("mypy.api")
    for name, block in BLOCKS:
        if block.startswith(SKIP):
            continue  # another library's code, shown for comparison
        module = re.sub(r"\W", "_", name.removesuffix(".md").replace(".md:", "_"))
        (tmp_path / f"block_{module}.py").write_text(block)
    stdout, stderr, status = mypy_api.run(
        [
            "--config-file", str(ROOT / "pyproject.toml"),
            "--cache-dir", str(ROOT / ".mypy_cache"),
            str(tmp_path),
        ]
    )  # fmt: skip
    assert status == 0, stdout + stderr


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "examples").glob("*.py")))
def test_the_readme_says_how_to_run_every_example(script: str) -> None:
    """Each example has a command line in the README, and the extra it needs is named."""
    text = (ROOT / "README.md").read_text()
    assert f"python examples/{script}" in text
    assert '".[examples]"' in text
