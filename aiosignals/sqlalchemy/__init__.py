"""
The SQLAlchemy integration: model signals from repositories and from your own sessions.

:class:`Database` owns an ``AsyncEngine`` and hands out instrumented sessions
(:attr:`Database.sessionmaker`, :meth:`Database.transaction`); :func:`instrument` does the
same for an ``async_sessionmaker`` the application already has. Every flush of an
instrumented session sends ``pre_save`` / ``post_save`` / ``pre_delete`` / ``post_delete``
for the objects it writes, with receivers awaited. Needs the ``sqlalchemy`` extra
(``postgres`` for asyncpg).
"""

from ..exceptions import NestedFlushError

try:
    from ._database import Database
    from ._repository import SQLAlchemyRepository
    from ._session import instrument
except ImportError as _error:  # pragma: no cover -- exercised by the minimal session
    raise ImportError(
        f'aiosignals.sqlalchemy needs SQLAlchemy: pip install "aiosignals[sqlalchemy]" ({_error})'
    ) from _error

__all__ = ["Database", "NestedFlushError", "SQLAlchemyRepository", "instrument"]
