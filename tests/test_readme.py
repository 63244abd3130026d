"""Every ``python`` block of the README runs, top to bottom, as one program would."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def test_the_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index: int, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    # Each block is a complete program, run in a fresh interpreter: a block that only works
    # after another one would mislead a reader who copies it alone.
    block = BLOCKS[index]
    # A block that starts with "# test_<name>.py" is a test module: pytest runs it.
    first_line = block.split("\n", 1)[0]
    is_test_module = first_line.startswith("# test_")
    name = first_line[2:].split(",")[0].split()[0] if is_test_module else f"block_{index}.py"
    script = tmp_path / name
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
    assert result.returncode == 0, f"block {index}:\n{block}\n{result.stdout}\n{result.stderr}"


def test_every_block_passes_mypy_strict(tmp_path: Path) -> None:
    """The README claims strict typing: each block, as a user would copy it, passes mypy."""
    # mypy is in the typing and dev groups, not in the tests one: the typing session runs this.
    mypy_api = pytest.importorskip("mypy.api")
    for index, block in enumerate(BLOCKS):
        (tmp_path / f"readme_block_{index}.py").write_text(block)
    root = README.parent
    stdout, stderr, status = mypy_api.run(
        [
            "--config-file", str(root / "pyproject.toml"),
            "--cache-dir", str(root / ".mypy_cache"),
            str(tmp_path),
        ]
    )  # fmt: skip
    assert status == 0, stdout + stderr


@pytest.mark.parametrize(
    "script",
    sorted(p.name for p in (README.parent / "examples").glob("*.py")),
)
def test_the_readme_says_how_to_run_every_example(script: str) -> None:
    """Each example has a command line in the README, and the extra it needs is named."""
    text = README.read_text()
    assert f"python examples/{script}" in text
    assert '".[examples]"' in text
