"""A payload subclass sent to a signal with durable receivers, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa

from aiosignals.outbox import OutboxRelay
from aiosignals.outbox._table import outbox
from tests.outbox import app
from tests.outbox.app import Job, job_done

if TYPE_CHECKING:
    from aiosignals.repository.sqlalchemy import Database

pytestmark = pytest.mark.anyio


class RushJob(Job):
    rush: bool = True


async def test_a_payload_subclass_is_stored_as_the_payload_type_and_delivered(
    db: Database,
) -> None:
    """The outbox stores only the payload type's fields of a subclass; the relay delivers it."""
    async with db.transaction():
        await job_done.send("tests", RushJob(n=7))
    async with db.engine.connect() as connection:
        payloads = (await connection.execute(sa.select(outbox.c.payload))).scalars().all()
    assert payloads
    assert all(json.loads(payload) == {"n": 7} for payload in payloads)
    await OutboxRelay(db, backoff=0.0).run_once()
    async with db.engine.connect() as connection:
        statuses = (await connection.execute(sa.select(outbox.c.status))).scalars().all()
    assert "dead" not in statuses
    assert len(app.JOBS) == len(payloads)
