"""
The SQLAlchemy backend of the repositories, kept here for imports written against 0.1.

It lives in :mod:`aiosignals.sqlalchemy`, the SQLAlchemy integration, which also
instruments the application's own sessions.
"""

from ..sqlalchemy import Database, SQLAlchemyRepository

__all__ = ["Database", "SQLAlchemyRepository"]
