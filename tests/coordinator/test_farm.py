"""The coordinator's hot path: the database writer, dispatch, queue estimates, shared loads."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, func, insert, select, text, update

import scheduler
from coordinator.farm import lifecycle
from coordinator.farm.engine import Farm
from coordinator.farm.events import EventHub
from coordinator.farm.live import AgentConn
from coordinator.settings import load_settings
from coordinator.store import models
from coordinator.store.db import (
    CHECKPOINT_EVERY,
    Reader,
    Writer,
    make_engine,
    make_sessionmaker,
    session_if_needed,
)
from coordinator.store.migrations import upgrade
from coordinator.store.storage import LocalBlobStore
from protocol import CoordinatorSession
from tests.support.protocol import hello, welcome


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


async def test_an_unused_session_closes_without_a_trip_around_the_loop(engine) -> None:  # type: ignore[no-untyped-def]
    sessions = make_sessionmaker(engine)

    async def unused() -> str:
        async with session_if_needed(sessions):
            return "done"

    step = unused()
    with pytest.raises(StopIteration) as finished:
        step.send(None)  # never suspended: no close task
    assert finished.value.value == "done"

    async with session_if_needed(sessions) as db:  # a used one is closed properly
        assert await db.scalar(select(func.count()).select_from(models.User)) == 0
        assert engine.pool.checkedout() == 1
    assert engine.pool.checkedout() == 0
    with pytest.raises(ZeroDivisionError):
        async with session_if_needed(sessions) as db:
            await db.scalar(select(func.count()).select_from(models.User))
            raise ZeroDivisionError
    assert engine.pool.checkedout() == 0


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


async def test_reader_on_its_kept_connection_sees_each_later_commit(engine) -> None:  # type: ignore[no-untyped-def]
    writer, reader = Writer(engine), Reader(engine)

    def names(db: Connection) -> set[str]:
        return set(db.scalars(select(models.User.username)).all())

    try:
        assert await reader.run(names) == set()
        for name in ("ann", "bob"):
            await writer.run(lambda db, name=name: _add_user(db, name))
            assert name in await reader.run(names)  # no read transaction left open
        assert reader.batches == 3
    finally:
        await reader.close()
        await writer.close()


async def test_writer_after_a_failed_commit_starts_over_on_a_fresh_connection(engine) -> None:  # type: ignore[no-untyped-def]
    writer = Writer(engine)

    def fails_at_commit(db: Connection) -> None:
        # Checked at COMMIT only: the statement passes, the commit fails and SQLite
        # leaves that transaction open on the connection.
        db.exec_driver_sql("PRAGMA defer_foreign_keys=ON")
        db.execute(
            insert(models.Subscription).values(
                user_id=999_999, tier="pro", status="active", created_at=0.0, updated_at=0.0
            )
        )

    try:
        await writer.run(lambda db: _add_user(db, "kept"))
        with pytest.raises(Exception, match="FOREIGN KEY"):
            await writer.run(fails_at_commit)
        assert await writer.run(lambda db: _add_user(db, "after")) > 0
        async with engine.connect() as conn:
            found = set((await conn.scalars(select(models.User.username))).all())
            subscriptions = await conn.scalar(select(func.count()).select_from(models.Subscription))
        assert found == {"kept", "after"} and subscriptions == 0
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
            inline = writer.inline_batches
            done, _ = await asyncio.wait([pending], timeout=0.2)
            assert not done  # blocked behind the open transaction, not failed
        assert await asyncio.wait_for(pending, 10) == 1
        assert writer.inline_batches == inline  # the loop did not wait: the thread did
        async with engine.connect() as conn:
            credit = await conn.scalar(select(models.User.credit).where(models.User.id == user_id))
        assert credit == 2.0
    finally:
        await writer.close()


async def test_writer_and_reader_run_on_the_loop_when_sqlite_is_free(engine) -> None:  # type: ignore[no-untyped-def]
    writer, reader = Writer(engine), Reader(engine)
    loop_thread = threading.get_ident()

    def add(db: Connection) -> int:
        assert threading.get_ident() == loop_thread
        return _add_user(db, "ann")

    try:
        user_id = await writer.run(add)
        name = await reader.run(
            lambda db: db.scalar(select(models.User.username).where(models.User.id == user_id))
        )
        assert name == "ann"
        assert (writer.batches, writer.inline_batches) == (1, 1)
        assert (reader.batches, reader.inline_batches) == (1, 1)
    finally:
        await reader.close()
        await writer.close()


async def test_writer_checkpoints_in_its_thread_and_keeps_the_wal_small(  # type: ignore[no-untyped-def]
    engine, tmp_path: Path
) -> None:
    # Inline commits never checkpoint (that would copy the WAL on the event loop); the
    # worker thread does every CHECKPOINT_EVERY commits, and the WAL is reused after.
    writer = Writer(engine)
    wal = tmp_path / "farm.db-wal"
    try:
        for i in range(10):
            await writer.run(functools.partial(_add_user, name=f"early{i}"))
        per_commit = wal.stat().st_size / 10
        for i in range(3 * CHECKPOINT_EVERY):
            await writer.run(functools.partial(_add_user, name=f"u{i}"))
        assert writer.inline_batches == writer.batches == 10 + 3 * CHECKPOINT_EVERY
        # Without checkpoints it would hold every commit's pages since the start.
        assert wal.stat().st_size < per_commit * 1.5 * CHECKPOINT_EVERY
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
        LocalBlobStore(tmp_path / "models"),
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


# -- leases, without sockets: a fake clock and a recording connection ----------


def _connected(farm: Farm, agent_id: str = "gpu-1") -> tuple[AgentConn, list[str]]:
    """An approved agent past its handshake, recording what the farm sends it."""
    sent: list[str] = []

    async def send_text(text: str) -> None:
        sent.append(text)

    async def close(code: int, reason: str) -> None:
        sent.append(f"close {code}")

    session = CoordinatorSession(max_result_bytes=farm.settings.max_result_bytes)
    session.receive(hello())
    conn = AgentConn(
        id=agent_id,
        owner_id=1,
        name=agent_id,
        session=session,
        send_text=send_text,
        close=close,
        capabilities=hello().capabilities,
        approved=True,
    )
    farm.register(conn)
    session.send(welcome(agent_id=agent_id))
    return conn, sent


async def _stored_job(farm: Farm, job_id: str) -> models.Job:
    """A user and their queued job in the database and in line."""
    uid = await farm.writer.run(lambda db: _add_user(db, f"user-{job_id}"))
    job = _queued(farm, job_id, uid)
    job.prompt_folded, job.attempt_base, job.public, job.hidden, job.like_count = (
        "p", 0, False, False, 0,
    )  # fmt: skip
    await farm.writer.run(lambda db: lifecycle.create(db, [job]))
    return job


async def _state(farm: Farm, job_id: str) -> tuple[str, int, str | None]:
    async with farm.sessions() as db:
        row = await db.get(models.Job, job_id)
        assert row is not None
        return row.state, row.attempt, row.agent_id


async def test_farm_lease_expiry_requeues_in_place_then_fails_after_max_attempts(
    farm: Farm,
) -> None:
    job = await _stored_job(farm, "j1")
    conn, sent = _connected(farm)
    clock = farm.clock
    for attempt in range(1, farm.settings.max_attempts + 1):
        assert await farm.dispatch_once() == 1
        assert await _state(farm, "j1") == ("assigned", attempt, conn.id)
        assert "assign" in sent[-1] and farm.leases["j1"].attempt == attempt
        clock.now += farm.settings.lease_s / 2  # type: ignore[attr-defined]
        farm.renew(conn)  # a heartbeat: the lease moves on
        assert await farm.reap_leases() == 0
        clock.now += farm.settings.lease_s + 1  # type: ignore[attr-defined]
        assert await farm.reap_leases() == 1  # silence past the lease
        assert '"type":"cancel"' in sent[-1].replace(" ", "")
        conn.session.release("j1", attempt)  # the agent dropped it as told
        if attempt < farm.settings.max_attempts:
            state, _, agent = await _state(farm, "j1")
            assert (state, agent) == ("queued", None)
            assert farm.queue["j1"].enqueued_at == job.enqueued_at  # its old place in line
    state, attempt, _ = await _state(farm, "j1")
    assert (state, attempt) == ("failed", farm.settings.max_attempts)
    assert "j1" not in farm.queue and "j1" not in farm.leases and farm.owner_of("j1") is None


async def test_farm_lose_of_a_stale_attempt_changes_nothing(farm: Farm) -> None:
    await _stored_job(farm, "j2")
    _connected(farm)
    assert await farm.dispatch_once() == 1
    await farm.lose("j2", attempt=7, why="an old attempt")  # not the live one
    assert (await _state(farm, "j2"))[0] == "assigned" and "j2" in farm.leases


async def test_farm_disconnect_shrinks_leases_to_the_grace_and_a_reconnect_adopts(
    farm: Farm,
) -> None:
    await _stored_job(farm, "j3")
    conn, _ = _connected(farm)
    assert await farm.dispatch_once() == 1
    farm.unregister(conn)
    grace_end = farm.clock() + farm.settings.reconnect_grace_s
    assert farm.leases["j3"].expires_at == grace_end
    back, _ = _connected(farm)  # the same agent, a new connection, naming its job
    farm.adopt(back, [("j3", 1), ("someone-elses", 1)])
    assert back.session.held == {("j3", 1)}
    farm.clock.now = grace_end + 1  # type: ignore[attr-defined]
    farm.renew(back)
    assert await farm.reap_leases() == 0 and (await _state(farm, "j3"))[0] == "assigned"


async def test_farm_settle_forgets_a_finished_job_and_frees_the_user(farm: Farm) -> None:
    job = await _stored_job(farm, "j4")
    _connected(farm)
    assert await farm.dispatch_once() == 1
    assert farm.users[str(job.user_id)].running == 1
    farm.settle("j4")
    assert "j4" not in farm.leases and farm.owner_of("j4") is None
    assert farm.users[str(job.user_id)].running == 0


# -- the queue index: kept by the farm, read by dispatch and estimates --------------


def _waiting(uid: int, job_id: str, at: float, model: str = "shap-e") -> models.Job:
    return models.Job(
        id=job_id, user_id=uid, prompt="p", prompt_folded="p", seed=1, guidance=15.0,
        steps=16, model=model, attempt=0, attempt_base=0, priority=0, created_at=at,
        enqueued_at=at, public=False, hidden=False, like_count=0,
    )  # fmt: skip


async def test_farm_queue_index_follows_enqueue_priority_dispatch_and_settle(farm: Farm) -> None:
    # A backlog of one user that no agent can run (a model nobody offers), then one it can.
    uid = await farm.writer.run(lambda db: _add_user(db, "backlogged"))
    jobs = [_waiting(uid, f"b{i:03d}", 100.0 + i, model="no-such-model") for i in range(300)]
    jobs.append(_waiting(uid, "probe", 999.0))
    await farm.writer.run(lambda db: lifecycle.create(db, jobs))
    farm.refresh_user(models.User(id=uid, tier="free", is_admin=False, credit=0.0))
    for job in jobs:
        farm.enqueue(job)
    assert farm.queued_count(uid) == 301 and farm.queued_count(uid + 1) == 0
    assert farm.queued_count_by_tier() == {
        tier: len(jobs) for tier, jobs in farm.queued_by_tier().items()
    }
    _connected(farm)
    positions = farm.positions()
    assert len(positions) == 301
    assert positions["probe"].position == 1 and positions["probe"].eta_s is not None
    # Nobody can run the backlog: it comes after, in line order, with no ETA.
    assert positions["b000"] == scheduler.QueueEstimate(2, None)
    assert positions.get("b299") == scheduler.QueueEstimate(301, None)
    assert positions.get("nope") is None
    # Bumped, a backlog job moves up its user's line (still no agent for it).
    assert farm.set_priority("b150", 5)
    assert [job.id for job in farm.queued_by_tier()["free"][:2]] == ["b150", "b000"]
    assert farm.positions()["b150"] == scheduler.QueueEstimate(2, None)
    # The pass steps over the backlog and assigns the job behind it.
    assert await farm.dispatch_once() == 1
    assert "probe" in farm.leases and "probe" not in farm.queue
    assert farm.queued_count(uid) == 300
    farm.settle("b007")  # e.g. cancelled while waiting
    assert "b007" not in farm.queue and farm.queued_count(uid) == 299
    assert farm.positions()["b299"] == scheduler.QueueEstimate(299, None)
