"""The documentation site builds strictly, and the README is its landing page."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_exports import PUBLIC_MODULES

ROOT = Path(__file__).parent.parent
PAGES = sorted(path.relative_to(ROOT / "docs").as_posix() for path in (ROOT / "docs").rglob("*.md"))


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    """`mkdocs build --strict` succeeds: no broken link, anchor, reference or nav entry."""
    pytest.importorskip("mkdocs", reason="the docs dependency group is not installed")
    result = subprocess.run(
        # Not -q: mkdocs counts the warnings that --strict fails on only while it logs them.
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "site" / "reference" / "index.html").exists()


def test_every_page_is_in_the_nav() -> None:
    """Each page of docs/ is listed in mkdocs.yml's nav, and the nav names no missing page."""
    config = (ROOT / "mkdocs.yml").read_text()
    nav = config.split("\nnav:\n", 1)[1].split("\n\n", 1)[0]
    listed = sorted(re.findall(r":\s*(\S+\.md)\s*$", nav, flags=re.M))
    assert listed == PAGES


def test_the_changelog_page_is_the_changelog() -> None:
    """The site's changelog includes CHANGELOG.md rather than a copy that could drift."""
    assert (ROOT / "docs" / "changelog.md").read_text().strip() == '--8<-- "CHANGELOG.md"'


def test_the_reference_documents_every_public_module() -> None:
    """Each public module (as tests/test_exports.py lists them) has its API reference section."""
    reference = (ROOT / "docs" / "reference.md").read_text()
    documented = re.findall(r"^::: (\S+)$", reference, flags=re.M)
    assert sorted(documented) == sorted(PUBLIC_MODULES)


README = ROOT / "README.md"


def test_the_readme_is_a_landing_page() -> None:
    """The README stays short: the guide lives on the site, not in one long page."""
    assert len(README.read_text().splitlines()) <= 200


def test_the_readme_links_to_every_page() -> None:
    """The README links to each page of the site (the changelog page through CHANGELOG.md)."""
    text = README.read_text()
    for page in PAGES:
        assert f"](docs/{page})" in text or f"](docs/{page}#" in text, page
    assert "](CHANGELOG.md)" in text


def test_the_readme_links_resolve() -> None:
    """Every relative link of the README names a file or folder of the repository."""
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README.read_text())
    for target in targets:
        if "://" not in target:
            assert (ROOT / target).exists(), target
