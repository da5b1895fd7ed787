"""The coordinator's hot path: the database writer, dispatch, queue estimates, shared loads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, insert, select, text, update

from coordinator import models
from coordinator.db import Writer, make_engine
from coordinator.migrations import upgrade


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[object]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'farm.db'}"
    await upgrade(url)
    engine = make_engine(url)
    yield engine
    await engine.dispose()


def _add_user(db: Connection, name: str) -> int:
    row = db.execute(
        insert(models.User)
        .values(username=name, password_hash="x", created_at=0.0)
        .returning(models.User.id)
    )
    return int(row.scalar_one())


async def test_writer_commits_before_answering_and_async_sessions_see_it(engine) -> None:  # type: ignore[no-untyped-def]
    writer = Writer(engine)
    try:
        user_id = await writer.run(lambda db: _add_user(db, "ann"))
        async with engine.connect() as conn:
            name = await conn.scalar(select(models.User.username).where(models.User.id == user_id))
        assert name == "ann"
    finally:
        await writer.close()


async def test_writer_runs_concurrent_units_in_one_transaction(engine) -> None:  # type: ignore[no-untyped-def]
    writer = Writer(engine)
    try:
        ids = await asyncio.gather(
            *(writer.run(lambda db, i=i: _add_user(db, f"u{i}")) for i in range(20))
        )
        assert len(set(ids)) == 20
        # The first unit starts a batch alone; the other 19 wait for it and share one.
        assert writer.units == 20
        assert writer.batches <= 3
    finally:
        await writer.close()


async def test_writer_rolls_back_only_the_failing_unit(engine) -> None:  # type: ignore[no-untyped-def]
    writer = Writer(engine)

    def half_then_fail(db: Connection) -> None:
        _add_user(db, "half")
        db.execute(text("INSERT INTO no_such_table VALUES (1)"))

    try:
        first = writer.run(lambda db: _add_user(db, "before"))
        bad = writer.run(half_then_fail)
        last = writer.run(lambda db: _add_user(db, "after"))
        results = await asyncio.gather(first, bad, last, return_exceptions=True)
        assert isinstance(results[0], int) and isinstance(results[2], int)
        assert isinstance(results[1], Exception) and "no_such_table" in str(results[1])
        async with engine.connect() as conn:
            names = set((await conn.scalars(select(models.User.username))).all())
        assert names == {"before", "after"}  # "half" went with its unit's savepoint
    finally:
        await writer.close()


async def test_writer_waits_out_a_writer_on_another_connection(engine) -> None:  # type: ignore[no-untyped-def]
    writer = Writer(engine)
    try:
        user_id = await writer.run(lambda db: _add_user(db, "bob"))
        async with engine.begin() as conn:  # holds SQLite's write lock until the block ends
            await conn.execute(
                update(models.User).where(models.User.id == user_id).values(credit=1.0)
            )
            pending = asyncio.ensure_future(
                writer.run(
                    lambda db: (
                        db.execute(
                            update(models.User)
                            .where(models.User.id == user_id)
                            .values(credit=models.User.credit + 1)
                        ).rowcount
                    )
                )
            )
            done, _ = await asyncio.wait([pending], timeout=0.2)
            assert not done  # blocked behind the open transaction, not failed
        assert await asyncio.wait_for(pending, 10) == 1
        async with engine.connect() as conn:
            credit = await conn.scalar(select(models.User.credit).where(models.User.id == user_id))
        assert credit == 2.0
    finally:
        await writer.close()
