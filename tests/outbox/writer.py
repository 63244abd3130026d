"""Commit orders (and roll some back), say so, then wait to be killed: ``URL COMMITTED ROLLED``."""

from __future__ import annotations

import contextlib
import sys

import anyio

from aiosignals.repository.sqlalchemy import Database, SQLAlchemyRepository
from tests.outbox.app import Base, Order


async def main(url: str, committed: int, rolled_back: int) -> None:
    async with Database(url) as db:
        await db.create_all(Base.metadata)
        orders = SQLAlchemyRepository(Order, db)
        for i in range(committed):
            async with db.transaction():
                await orders.add(Order(item=f"kept-{i}"))
            if i < rolled_back:
                with contextlib.suppress(LookupError):
                    async with db.transaction():
                        await orders.add(Order(item=f"dropped-{i}"))
                        raise LookupError
        print("committed", flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
