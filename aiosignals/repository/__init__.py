"""
Repositories: async persistence that sends the model signals.

``MemoryRepository`` needs nothing; the SQLAlchemy backend lives in
:mod:`aiosignals.repository.sqlalchemy` (the ``sqlalchemy`` extra) so that importing this
package never imports SQLAlchemy.
"""

from ._protocol import IntegrityError, NotFound, Repository
from .memory import MemoryRepository

__all__ = ["IntegrityError", "MemoryRepository", "NotFound", "Repository"]
