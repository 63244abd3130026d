"""
``aiosignals demo``: the seed scenario on embedded SQLite (or ``--db URL``).

Users are saved through :class:`~aiosignals.sqlalchemy.SQLAlchemyRepository`, and through
an instrumented session with plain ``session.add()``; ``log_user_creation`` runs on every
``post_save`` of a ``User``, and ``create_user_profile`` runs after the commit, so a
rolled-back save never leaves a profile behind. Each step prints which receivers ran; the
run ends with a summary and exits non-zero if an invariant did not hold.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from ._cli_args import database_url, hide_passwords

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``demo`` options to *parser*."""
    parser.add_argument(
        "--db",
        type=database_url,
        metavar="URL",
        help="an SQLAlchemy URL (default: a new SQLite file in a temporary directory),"
        " e.g. postgresql+asyncpg://user@localhost/demo",
    )


def run(args: argparse.Namespace) -> int:
    """Run the demo; return the exit status."""
    import anyio

    # Imported here so that `aiosignals --help` needs no SQLAlchemy; without it the
    # ImportError reaches the command, which names the extra to install.
    from sqlalchemy.exc import SQLAlchemyError

    from ._demo_app import scenario

    with tempfile.TemporaryDirectory(prefix="aiosignals-demo-") as directory:
        url = args.db or f"sqlite+aiosqlite:///{Path(directory) / 'demo.db'}"
        try:
            return anyio.run(scenario, url)
        except (OSError, SQLAlchemyError) as exc:
            # A wrong URL or an unreachable server: say so, without a traceback.
            print(
                hide_passwords(f"aiosignals demo: cannot use the database {url!r}: {exc}"),
                file=sys.stderr,
            )
            return 2
