"""
Write every runnable ``python`` block of the README and docs/ to DIR, one module each.

The typing session runs mypy --strict on them: a block a reader copies type-checks as the
library promises, not only runs. The blocks are found exactly as tests/test_readme.py finds
them; the fragments it skips (``# not run: ...``, code of other libraries) are left out.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.test_readme import BLOCKS, SKIP  # noqa: E402 -- after the path is set


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name, block in BLOCKS:
        if block.startswith(SKIP):
            continue
        module = re.sub(r"\W", "_", name.removesuffix(".md").replace(".md:", "_"))
        (out / f"block_{module}.py").write_text(block)


if __name__ == "__main__":
    main()
