"""``python -m aiosignals``: the same as the ``aiosignals`` command."""

from __future__ import annotations

import sys

from ._cli import main

sys.exit(main())
