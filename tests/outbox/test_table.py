"""The outbox table: delivery ids, and payloads stored and read back exactly (#11)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from aiosignals.outbox import OutboxRelay
from aiosignals.repository.sqlalchemy import Database, SQLAlchemyRepository
from tests.outbox import data_app
from tests.outbox.data_app import Blob, Measured, Member, Pickled, Point, Reading, measured

pytestmark = pytest.mark.anyio

OUTBOX = "aiosignals_outbox"


@pytest.fixture(autouse=True)
def fresh_records() -> None:
    """Each test starts with nothing received."""
    data_app.RECEIVED.clear()
    data_app.WELCOMED.clear()


@pytest.fixture
async def data_db(db_url: str) -> AsyncIterator[Database]:
    async with Database(db_url, name="members") as database:
        await database.create_all(data_app.Base.metadata)
        yield database


async def outbox_count(db: Database) -> int:
    async with db.engine.connect() as connection:
        count = await connection.scalar(sa.text(f"SELECT count(*) FROM {OUTBOX}"))
    return int(count or 0)


async def test_delivery_ids_never_repeat_after_delivered_rows_are_deleted(
    data_db: Database,
) -> None:
    """Five users saved and relayed one by one: five ids, five mails de-duplicated by id."""
    members = SQLAlchemyRepository(Member, data_db)
    relay = OutboxRelay(data_db, backoff=0.0)
    for n in range(5):
        async with data_db.transaction():
            await members.add(Member(email=f"user{n}@example.com"))
        assert await relay.run_once() == 1
        assert await outbox_count(data_db) == 0  # delivered rows are deleted
    ids = [delivery.id for delivery, _ in data_app.RECEIVED]
    assert ids == sorted(set(ids))
    assert sorted(data_app.WELCOMED.values()) == [f"user{n}@example.com" for n in range(5)]


async def test_the_delivery_key_names_the_database(data_db: Database) -> None:
    """``current_delivery().key`` is ``outbox:<database name>:<id>``."""
    async with data_db.transaction():
        await SQLAlchemyRepository(Member, data_db).add(Member(email="a@example.com"))
    await OutboxRelay(data_db).run_once()
    ((delivery, _),) = data_app.RECEIVED
    assert delivery.database == "members"
    assert delivery.key == f"outbox:members:{delivery.id}"


LEGACY_DDL = """
CREATE TABLE aiosignals_outbox (
    id INTEGER NOT NULL PRIMARY KEY,
    dispatch_uid VARCHAR(255) NOT NULL,
    signal VARCHAR(255) NOT NULL,
    sender TEXT NOT NULL,
    payload TEXT NOT NULL,
    status VARCHAR(16) NOT NULL,
    attempts INTEGER NOT NULL,
    created_at FLOAT NOT NULL,
    available_at FLOAT NOT NULL,
    locked_until FLOAT,
    locked_by VARCHAR(255),
    last_error TEXT
)
"""


async def test_an_outbox_table_of_an_earlier_version_on_sqlite_is_migrated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An SQLite outbox table made without AUTOINCREMENT is rebuilt with it, its rows kept."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'legacy.db'}"
    async with Database(url) as db:
        async with db.engine.begin() as connection:
            await connection.exec_driver_sql(LEGACY_DDL)
            await connection.exec_driver_sql(
                "CREATE INDEX aiosignals_outbox_due ON aiosignals_outbox (status, dispatch_uid, id)"
            )
            for row_id, status in ((3, "pending"), (7, "dead")):
                await connection.exec_driver_sql(
                    "INSERT INTO aiosignals_outbox VALUES (?, 'tests.outbox.data.welcome',"
                    " 'aiosignals.post_save', 'none:', '{}', ?, 0, 0, 0, NULL, NULL, NULL)",
                    (row_id, status),
                )
        await db.create_all(data_app.Base.metadata)
        assert "rebuilt the outbox table aiosignals_outbox with AUTOINCREMENT (2 rows kept)" in (
            caplog.text
        )
        caplog.clear()
        await OutboxRelay.create_table(db)  # once rebuilt, left alone
        assert "rebuilt" not in caplog.text
        async with db.engine.begin() as connection:
            ddl = await connection.scalar(
                sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :name"),
                {"name": OUTBOX},
            )
            kept = (
                await connection.execute(sa.text(f"SELECT id, status FROM {OUTBOX} ORDER BY id"))
            ).all()
            await connection.exec_driver_sql(f"DELETE FROM {OUTBOX}")
        assert "AUTOINCREMENT" in str(ddl).upper()
        assert [tuple(row) for row in kept] == [(3, "pending"), (7, "dead")]

        async with db.transaction():
            await SQLAlchemyRepository(Member, db).add(Member(email="a@example.com"))
        async with db.engine.connect() as connection:
            (new_id,) = (await connection.scalars(sa.text(f"SELECT id FROM {OUTBOX}"))).all()
        assert new_id > 7


async def test_floats_nan_and_infinities_round_trip_through_the_outbox(
    data_db: Database,
) -> None:
    """NaN and infinities, in an event and in an entity's Float column, are delivered as sent."""
    async with data_db.transaction():
        await measured.send(
            "sensor",
            Measured(
                value=math.nan,
                where=Point(x=math.inf),
                series=(math.inf, -math.inf, 1.5),
                named={"low": -math.inf, "none": math.nan},
            ),
        )
        await SQLAlchemyRepository(Reading, data_db).add(Reading(value=-math.inf))
    assert await OutboxRelay(data_db).run_once() == 2
    (_, event), (_, saved) = data_app.RECEIVED
    assert isinstance(event, Measured)
    assert math.isnan(event.value)
    assert event.where == Point(x=math.inf)
    assert event.series == (math.inf, -math.inf, 1.5)
    assert event.named["low"] == -math.inf
    assert math.isnan(event.named["none"])
    assert isinstance(saved.instance, Reading)
    assert saved.instance.value == -math.inf


BINARY = bytes(range(256))[::-1]
"""Every byte value, starting with ones that are not UTF-8."""


async def test_bytes_that_are_not_utf8_round_trip_through_the_outbox(data_db: Database) -> None:
    """Non-UTF-8 bytes in a LargeBinary column and in a bytes field are delivered exactly."""
    blobs = SQLAlchemyRepository(Blob, data_db)
    async with data_db.transaction():
        blob = await blobs.add(Blob(data=BINARY))
        await measured.send("sensor", value=0.0, raw=b"\xff\x00\xfe")
    stored = await blobs.get(blob.id)
    assert stored is not None
    assert stored.data == BINARY
    assert await OutboxRelay(data_db).run_once() == 2
    (_, saved), (_, event) = data_app.RECEIVED
    assert isinstance(saved.instance, Blob)
    assert saved.instance.data == BINARY
    assert event.raw == b"\xff\x00\xfe"


async def test_a_payload_that_cannot_be_stored_is_refused_naming_outbox_signal_and_receiver(
    data_db: Database,
) -> None:
    """A value with no JSON form fails the save, naming outbox, signal and receiver; no row."""
    pickled = SQLAlchemyRepository(Pickled, data_db)
    with pytest.raises(TypeError) as failure:
        async with data_db.transaction():
            await pickled.add(Pickled(thing=object()))
    message = str(failure.value)
    assert OUTBOX in message
    assert "aiosignals.post_save" in message
    assert "tests.outbox.data.pickled" in message
    assert await outbox_count(data_db) == 0
    assert await pickled.list() == []


async def test_an_outbox_table_without_the_failures_and_receiver_columns_gets_them(
    db_url: str,
) -> None:
    """
    An outbox table of an earlier version gains ``failures`` (its attempts, each then a
    failure), ``receiver`` and ``ordering_key`` (one key per receiver), its rows kept, once.
    """
    async with Database(db_url) as db:
        async with db.engine.begin() as connection:
            await connection.exec_driver_sql(LEGACY_DDL)
            await connection.exec_driver_sql(
                "INSERT INTO aiosignals_outbox VALUES (3, 'tests.outbox.data.welcome',"
                " 'aiosignals.post_save', 'none:', '{}', 'pending', 2, 0, 0, NULL, NULL, NULL)"
            )
        await OutboxRelay.create_table(db)
        async with db.engine.connect() as connection:
            row = (
                await connection.execute(
                    sa.text(f"SELECT attempts, failures, receiver, ordering_key FROM {OUTBOX}")
                )
            ).one()
        assert tuple(row) == (2, 2, None, "")
        await OutboxRelay.create_table(db)  # once added, left alone
