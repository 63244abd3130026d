"""
The aiosignals pytest plugin, registered through the ``pytest11`` entry point.

Its fixtures are thin layers over :mod:`aiosignals.testing`.
"""

from __future__ import annotations
