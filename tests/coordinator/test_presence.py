"""Replica mode's tables on a real PostgreSQL: fencing, reaping, the advisory lock.

Each test gets its own database copied from a migrated template; skipped with the
reason when the PostgreSQL server binaries are not installed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import scheduler
from coordinator.farm import lifecycle, presence
from coordinator.farm.leader import Leadership
from coordinator.store import models
from coordinator.store.db import Writer
from coordinator.store.migrations import alembic_config, upgrade_sync
from tests.support.coordinators import ROOT, make_settings, provision
from tests.support.postgres import asyncpg_dsn, copy_database, throwaway_postgres

pytestmark = pytest.mark.slow

NOW = 1_000_000.0
CAPS = presence.Presence("", True, True, True, frozenset({"shap-e"}), 4, 64, frozenset())


@pytest.fixture(scope="module")
def migrated_postgres() -> Iterator[str]:
    with throwaway_postgres() as url:
        upgrade_sync(url)
        yield url


@pytest.fixture
def postgres_url(migrated_postgres: str) -> str:
    return copy_database(migrated_postgres, f"test_{secrets.token_hex(6)}")


@pytest.fixture
async def engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    made = create_async_engine(postgres_url)
    yield made
    await made.dispose()


async def _agent_and_job(tmp_path: Path, url: str, writer: Writer) -> tuple[str, str]:
    """alice, her approved agent and one queued job; returns (agent id, job id)."""
    _, token_file = await provision(make_settings(tmp_path / "data", database_url=url), tmp_path)
    agent_id = token_file.read_text().strip().split(".")[1]
    job = models.Job(
        id=secrets.token_hex(8), user_id=1, prompt="a cube", seed=1, guidance=15.0, steps=8,
        model="shap-e", attempt=0, attempt_base=0, priority=0, created_at=NOW, enqueued_at=NOW,
        prompt_folded="a cube", public=False, hidden=False, like_count=0,
    )  # fmt: skip
    await writer.run(lambda db: lifecycle.create(db, [job]))
    return agent_id, job.id


async def test_a_deposed_leaders_claim_is_refused_and_claims_nothing(
    tmp_path: Path, postgres_url: str, engine: AsyncEngine
) -> None:
    writer = Writer(engine)
    agent_id, job_id = await _agent_and_job(tmp_path, postgres_url, writer)
    old, fresh = await writer.run(lambda db: presence.lead(db, "old", NOW))
    assert fresh == scheduler.FairState()
    new, _ = await writer.run(lambda db: presence.lead(db, "new", NOW + 1))
    assert new == old + 1
    batch = [(agent_id, (job_id,))]
    with pytest.raises(presence.DeposedError):
        await writer.run(lambda db: presence.fenced_claim(db, old, batch))
    assert await writer.run(lambda db: presence.queued_row(db, job_id)) is not None
    fair = scheduler.FairState(2.5, (("free", 3.0),), (("free", 1.0),), (("free", "1", 4.0),))
    claimed = await writer.run(lambda db: presence.fenced_claim(db, new, batch, fair))
    assert [[(s.job, s.attempt) for s in specs] for specs in claimed] == [[(job_id, 1)]]
    # The next leader goes on from the fair-share state stored with the claim.
    _, resumed = await writer.run(lambda db: presence.lead(db, "next", NOW + 2))
    assert resumed == fair
    await writer.close()


async def test_a_dead_replica_is_reaped_once_however_many_replicas_try(
    tmp_path: Path, postgres_url: str, engine: AsyncEngine
) -> None:
    writers = [Writer(engine) for _ in range(4)]
    first = writers[0]
    agent_id, job_id = await _agent_and_job(tmp_path, postgres_url, first)
    held = dataclasses.replace(CAPS, agent_id=agent_id)
    await first.run(lambda db: presence.join(db, "dead", NOW))
    await first.run(lambda db: presence.join(db, "alive", NOW + 30))
    await first.run(lambda db: presence.hold(db, "dead", held, NOW))
    epoch, _ = await first.run(lambda db: presence.lead(db, "alive", NOW))
    batch = [(agent_id, (job_id,))]
    await first.run(lambda db: presence.fenced_claim(db, epoch, batch))
    assert await first.run(presence.free_agents) == []  # it holds a job
    reaps = await asyncio.gather(
        *(w.run(lambda db: presence.reap(db, NOW + 10, NOW + 40, 3)) for w in writers)
    )
    lost = [item for found in reaps for item in found]
    assert lost == [presence.Lost(job_id, 1, "queued")]
    assert await first.run(lambda db: presence.holder(db, agent_id)) is None
    row = await first.run(lambda db: presence.queued_row(db, job_id))
    assert row is not None and row.attempt == 1 and row.agent_id is None
    # The live replica is not reaped; nothing more happens on later passes.
    assert await first.run(lambda db: presence.reap(db, NOW + 10, NOW + 41, 3)) == []
    assert await first.run(lambda db: presence.beat(db, "alive", NOW + 41))
    assert not await first.run(lambda db: presence.beat(db, "dead", NOW + 41))  # it rejoins
    for writer in writers:
        await writer.close()


async def test_jobs_of_an_agent_no_replica_holds_are_requeued(
    tmp_path: Path, postgres_url: str, engine: AsyncEngine
) -> None:
    writer = Writer(engine)
    agent_id, job_id = await _agent_and_job(tmp_path, postgres_url, writer)
    epoch, _ = await writer.run(lambda db: presence.lead(db, "me", NOW))
    await writer.run(lambda db: presence.fenced_claim(db, epoch, [(agent_id, (job_id,))]))
    lost = await writer.run(lambda db: presence.reap_orphans(db, NOW, 3))
    assert lost == [presence.Lost(job_id, 1, "queued")]
    assert await writer.run(lambda db: presence.reap_orphans(db, NOW, 3)) == []
    await writer.close()


async def test_one_leader_at_a_time_and_the_next_takes_over(postgres_url: str) -> None:
    dsn = asyncpg_dsn(postgres_url)
    first, second = Leadership(dsn, "first"), Leadership(dsn, "second")
    try:
        assert await first.attempt()
        assert not await second.attempt()
        assert await first.attempt()  # it keeps the lock while its connection lives
        await first.resign()
        assert await second.attempt()
        assert not await first.attempt()
    finally:
        await first.resign()
        await second.resign()


async def test_free_agents_are_held_by_a_live_replica_and_hold_no_job(
    tmp_path: Path, postgres_url: str, engine: AsyncEngine
) -> None:
    writer = Writer(engine)
    agent_id, _ = await _agent_and_job(tmp_path, postgres_url, writer)
    held = dataclasses.replace(CAPS, agent_id=agent_id)
    await writer.run(lambda db: presence.join(db, "r1", NOW))
    await writer.run(lambda db: presence.hold(db, "r1", held, NOW))
    free = await writer.run(lambda db: presence.free_agents(db, NOW - 1))
    assert [(a.id, a.models, a.max_batch) for a in free] == [(agent_id, {"shap-e"}, 4)]
    # Its replica missed its beats: maybe dead, so not planned for.
    assert await writer.run(lambda db: presence.free_agents(db, NOW + 1)) == []
    paused = dataclasses.replace(held, available=False)
    await writer.run(lambda db: presence.hold(db, "r1", paused, NOW))
    assert await writer.run(lambda db: presence.free_agents(db, NOW - 1)) == []
    await writer.close()


async def test_replicas_starting_together_migrate_one_at_a_time(migrated_postgres: str) -> None:
    """Three processes migrate one fresh database at once (as replicas do at start-up):
    the advisory lock lets one migrate; the others find it at head."""
    name = f"fresh_{secrets.token_hex(4)}"
    url = migrated_postgres.rsplit("/", 1)[0] + f"/{name}"
    admin = create_async_engine(migrated_postgres, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.exec_driver_sql(f"CREATE DATABASE {name}")
    finally:
        await admin.dispose()
    code = (
        "import sys; from coordinator.store import migrations; migrations.upgrade_sync(sys.argv[1])"
    )
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, url, cwd=ROOT, stderr=asyncio.subprocess.PIPE
        )
        for _ in range(3)
    ]
    async with asyncio.timeout(120):
        outcomes = [(await proc.wait(), proc.stderr) for proc in procs]
        errors = [await err.read() if err else b"" for _, err in outcomes]
    assert [rc for rc, _ in outcomes] == [0, 0, 0], errors
    fresh = create_async_engine(url)
    try:
        async with fresh.connect() as conn:
            version = await conn.exec_driver_sql("SELECT version_num FROM alembic_version")
            head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
            assert [row[0] for row in version] == [head]
    finally:
        await fresh.dispose()
