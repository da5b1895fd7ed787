"""The coordinator's hot path: the database writer, dispatch, queue estimates, shared loads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, insert, select, text, update

import scheduler
from coordinator.farm.engine import Farm
from coordinator.farm.events import EventHub
from coordinator.settings import load_settings
from coordinator.store import models
from coordinator.store.db import Writer, make_engine, make_sessionmaker
from coordinator.store.migrations import upgrade
from coordinator.store.storage import BlobStore


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


# -- shared loads for live pages ---------------------------------------------------


async def test_hub_shared_load_runs_once_for_all_viewers_until_the_topic_changes() -> None:
    hub = EventHub()
    calls = 0
    gate = asyncio.Event()

    async def load() -> int:
        nonlocal calls
        calls += 1
        await gate.wait()
        return calls

    async with hub.subscribe("job:1"):
        viewers = [asyncio.ensure_future(hub.shared("job:1", "row", load)) for _ in range(50)]
        await asyncio.sleep(0)
        gate.set()
        assert await asyncio.gather(*viewers) == [1] * 50
        hub.publish("job:1", "progress")  # live progress only: the row did not change
        assert await hub.shared("job:1", "row", load) == 1
        hub.publish("job:1")
        assert await hub.shared("job:1", "row", load) == 2
        assert calls == 2


async def test_hub_shared_load_failure_is_not_cached() -> None:
    hub = EventHub()
    attempts = []

    async def load() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("database went away")
        return "ok"

    async with hub.subscribe("job:2"):
        with pytest.raises(RuntimeError, match="went away"):
            await hub.shared("job:2", "row", load)
        assert await hub.shared("job:2", "row", load) == "ok"


async def test_hub_shared_load_forgotten_when_the_last_viewer_leaves() -> None:
    hub = EventHub()
    values = iter(["first", "second"])

    async def load() -> str:
        return next(values)

    async with hub.subscribe("job:3"):
        assert await hub.shared("job:3", "row", load) == "first"
    async with hub.subscribe("job:3"):
        # No version survives without subscribers, so nothing stale can be served.
        assert await hub.shared("job:3", "row", load) == "second"


# -- the farm: queue estimates and dispatch passes ---------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def farm(engine, tmp_path: Path) -> AsyncIterator[Farm]:  # type: ignore[no-untyped-def]
    from coordinator.app import load_tiers
    from coordinator.services import entitlement

    settings = load_settings({"data_dir": tmp_path}, environ={})
    clock = Clock()
    tiers = load_tiers(None)
    the_farm = Farm(
        settings,
        make_sessionmaker(engine),
        EventHub(),
        tiers,
        BlobStore(tmp_path / "models"),
        clock,
        tier_of=entitlement.policy(tiers, settings.subscription_grace_s),
    )
    yield the_farm
    await the_farm.writer.close()


def _queued(farm: Farm, job_id: str, user_id: int = 1) -> models.Job:
    job = models.Job(
        id=job_id, user_id=user_id, prompt="p", seed=1, guidance=15.0, steps=64,
        model="shap-e", attempt=0, priority=0, created_at=farm.clock(),
        enqueued_at=farm.clock(),
    )  # fmt: skip
    if str(user_id) not in farm.users:
        farm.refresh_user(models.User(id=user_id, tier="free", is_admin=False, credit=0.0))
    farm.enqueue(job)
    return job


async def test_farm_positions_computed_once_per_queue_change(farm: Farm) -> None:
    _queued(farm, "a")
    first = farm.positions()
    assert farm.positions() is first  # a page view or SSE render reuses it
    _queued(farm, "b")
    second = farm.positions()
    assert second is not first and set(second) == {"a", "b"}
    farm.clock.now += 2.0  # type: ignore[attr-defined]
    assert farm.positions() is not second  # waiting jobs age: at most 1 s old


async def test_farm_dispatch_pass_skipped_without_a_free_agent(farm: Farm) -> None:
    _queued(farm, "a")
    planned = []
    real_plan = scheduler.plan

    def spy(*args: object, **kw: object) -> object:
        planned.append(1)
        return real_plan(*args, **kw)  # type: ignore[arg-type]

    scheduler.plan = spy  # type: ignore[assignment]
    try:
        assert await farm.dispatch_once() == 0
    finally:
        scheduler.plan = real_plan
    assert planned == []  # no agents: no pass over the queue at all
