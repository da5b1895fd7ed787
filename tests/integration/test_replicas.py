"""Coordinator replicas on one PostgreSQL (replica mode): any replica serves anyone.

Three replicas run in this event loop on three ports, sharing one throwaway
PostgreSQL cluster (skipped with the reason without the server binaries). Agents are
scripted over real WebSockets, browsers are raw SSE sockets, clients use the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from coordinator.cli.admin_cli import create_user, issue_token, write_secret_file
from coordinator.settings import Settings
from coordinator.store import models
from coordinator.store.migrations import upgrade_sync
from protocol import (
    Accepted,
    Assign,
    Cancel,
    Drain,
    Error,
    Pause,
    Progress,
    ResultAck,
    Resume,
    Welcome,
)
from tests.support.coordinators import (
    CSRF_FIELD,
    PASSWORD,
    TWO_A_DAY,
    RunningCoordinator,
    api_client,
    logged_in,
    make_settings,
    provision,
    running_coordinator,
    start_agent,
    stop_process,
    wait_for,
)
from tests.support.postgres import copy_database, throwaway_postgres
from tests.support.procs import CoordinatorProcess, coordinator_env, free_port
from tests.support.rawhttp import get, login_cookie
from tests.support.scripted_agent import ScriptedAgent

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def migrated_postgres() -> Iterator[str]:
    with throwaway_postgres() as url:
        upgrade_sync(url)
        yield url


@pytest.fixture
def postgres_url(migrated_postgres: str) -> str:
    return copy_database(migrated_postgres, f"test_{secrets.token_hex(6)}")


@contextlib.asynccontextmanager
async def replicas(
    tmp_path: Path, url: str, n: int = 3, **overrides: Any
) -> AsyncIterator[list[RunningCoordinator]]:
    settings = _settings(tmp_path, url, **overrides)
    async with contextlib.AsyncExitStack() as stack:
        coords = [await stack.enter_async_context(running_coordinator(settings)) for _ in range(n)]
        yield coords


def _settings(tmp_path: Path, url: str, **overrides: Any) -> Settings:
    return make_settings(
        tmp_path / "data",
        database_url=url,
        replicas=True,
        replica_heartbeat_s=0.2,
        replica_dead_s=1.0,
        **overrides,
    )


async def _leader(coords: list[RunningCoordinator], within: float = 10.0) -> RunningCoordinator:
    async with asyncio.timeout(within):
        while True:
            leading = [c for c in coords if c.farm.cluster.leading]
            if leading:
                assert len(leading) == 1
                return leading[0]
            await asyncio.sleep(0.05)  # leadership is taken by a 1 s retry, nothing to await


async def _until(coord: RunningCoordinator, check: Callable[[], bool], within: float = 5) -> None:
    """Wait for ``check()`` on one replica, re-checking on each change of its farm."""
    async with coord.farm.hub.subscribe("farm") as changes, asyncio.timeout(within):
        while not check():
            await changes.get()


async def _submit(client: httpx.AsyncClient, prompt: str) -> str:
    made = await client.post("/api/v1/jobs", json={"prompt": prompt, "steps": 8})
    assert made.status_code == 201, made.text
    return str(made.json()["jobs"][0]["id"])


async def test_job_submitted_on_one_replica_runs_on_another_and_streams_on_a_third(
    tmp_path: Path, postgres_url: str
) -> None:
    settings = _settings(tmp_path, postgres_url)
    key, token_file = await provision(settings, tmp_path)
    async with replicas(tmp_path, postgres_url) as (a, b, c):
        leader = await _leader([a, b, c])
        agent = ScriptedAgent(b.ws, token_file.read_text().strip())
        assert isinstance(await agent.connect(), Welcome)
        # Every replica counts it (pages say whether an agent can run a job's model).
        await _until(c, lambda: c.farm.agents_online() == 1)
        await _until(a, lambda: a.farm.agents_with("shap-e") == 1)
        assert not a.farm.agents  # its socket is B's
        cookie = await login_cookie(c.http, "alice")
        async with api_client(a, key) as on_a, api_client(c, key) as on_c:
            job_id = await _submit(on_a, "a teapot")
            assign = await agent.expect(Assign, within=10)
            assert [(s.job, s.attempt) for s in assign.jobs] == [(job_id, 1)]
            assert leader.farm.queue.get(job_id) is None
            # A browser on C watches the job while B's agent reports progress.
            stream = await get(c.port, f"/jobs/{job_id}/events", cookie)
            try:
                assert stream.status == 200
                await stream.read_event(5)  # the current state
                await agent.send(Accepted(job=job_id, attempt=1))
                await agent.send(Progress(job=job_id, attempt=1, stage="sampling", step=3, total=8))
                async with asyncio.timeout(5):
                    while 'value="3"' not in await stream.read_event(5):
                        pass
            finally:
                await stream.close()
            await agent.upload(job_id, 1)
            assert (await agent.expect(ResultAck)).status == "stored"
            job = (await on_c.get(f"/api/v1/jobs/{job_id}")).json()
            assert (job["state"], job["attempt"]) == ("succeeded", 1)
            glb = await on_c.get(f"/api/v1/jobs/{job_id}/download/glb")
            assert glb.status_code == 200 and glb.content[:4] == b"glTF"

            # Cancelled on C, the job stops on B's agent within a second.
            second = await _submit(on_c, "a chair")
            assign = await agent.expect(Assign, within=10)
            assert [s.job for s in assign.jobs] == [second]
            cancelled = await on_c.post(f"/api/v1/jobs/{second}/cancel")
            assert cancelled.status_code == 200, cancelled.text
            stop = await agent.expect(Cancel, within=1.5)
            assert (stop.job, stop.attempt) == (second, 1)
            assert (await on_a.get(f"/api/v1/jobs/{second}")).json()["state"] == "cancelled"
        await agent.close()


async def test_a_users_daily_quota_holds_across_replicas(tmp_path: Path, postgres_url: str) -> None:
    tiers = tmp_path / "tiers.toml"
    tiers.write_text(TWO_A_DAY)
    settings = _settings(tmp_path, postgres_url, tiers_file=tiers)
    key, _ = await provision(settings, tmp_path)
    async with (
        replicas(tmp_path, postgres_url, tiers_file=tiers) as coords,
        contextlib.AsyncExitStack() as stack,
    ):
        clients = [await stack.enter_async_context(api_client(c, key)) for c in coords]
        answers = await asyncio.gather(
            *(
                client.post("/api/v1/jobs", json={"prompt": f"a cup {i}", "steps": 8})
                for i, client in enumerate(clients * 3)
            )
        )
        assert sorted(a.status_code for a in answers) == [201] * 2 + [429] * 7
        listing = (await clients[2].get("/api/v1/jobs")).json()
        assert listing["total"] == 2


async def _press(client: httpx.AsyncClient, agent_id: str, action: str, **form: str) -> Any:
    """A button of the Contribute page."""
    token = CSRF_FIELD.search((await client.get("/contribute")).text)
    assert token, "no CSRF token on the Contribute page"
    return await client.post(
        f"/contribute/agents/{agent_id}/{action}", data={"csrf_token": token.group(1), **form}
    )


async def _admin_act(coord: RunningCoordinator, agent_id: str, action: str) -> None:
    """An administrator's action through the HTML route of this replica."""
    async with logged_in(coord, "root") as admin:
        token = CSRF_FIELD.search((await admin.get("/admin/agents")).text)
        assert token, "no CSRF token on the agents page"
        done = await admin.post(
            f"/admin/agents/{agent_id}/{action}", data={"csrf_token": token.group(1)}
        )
        assert done.status_code == 303, (action, done.status_code, done.text[:300])


async def test_admin_controls_reach_an_agent_through_its_replica(
    tmp_path: Path, postgres_url: str
) -> None:
    settings = _settings(tmp_path, postgres_url)
    key, token_file = await provision(settings, tmp_path)
    await create_user(settings, "root", PASSWORD, None, is_admin=True)
    token = token_file.read_text().strip()
    agent_id = token.split(".")[1]
    async with replicas(tmp_path, postgres_url) as (a, b, c):
        await _leader([a, b, c])
        agent = ScriptedAgent(b.ws, token)
        assert isinstance(await agent.connect(), Welcome)
        async with api_client(a, key) as on_a:
            job_id = await _submit(on_a, "a lamp")
            assert [s.job for s in (await agent.expect(Assign)).jobs] == [job_id]
            # Its owner pauses it on the Contribute page of C, and resumes it on A.
            async with logged_in(c, "alice") as alice:
                assert (await _press(alice, agent_id, "pause", batch="finish")).status_code == 303
                assert not (await agent.expect(Pause, within=1.5)).cancel
            async with logged_in(a, "alice") as alice:
                assert (await _press(alice, agent_id, "resume")).status_code == 303
                await agent.expect(Resume, within=1.5)
            await _admin_act(c, agent_id, "drain")  # on C; the agent is on B
            await agent.expect(Drain, within=1.5)
            assert all(coord.farm.is_drained(agent_id) for coord in (a, b, c))
            await _admin_act(a, agent_id, "resume")  # the agent reconnects ready for work
            with pytest.raises(websockets.ConnectionClosed):
                await agent.expect(Welcome, within=1.5)
            assert not any(coord.farm.is_drained(agent_id) for coord in (a, b, c))
            # It comes back through C with the job it still runs: C adopts it.
            agent = ScriptedAgent(c.ws, token)
            assert isinstance(await agent.connect(holding=((job_id, 1),)), Welcome)
            await _admin_act(b, agent_id, "revoke")  # on B, which no longer holds it
            refused = await agent.expect(Error, within=1.5)
            assert refused.code == "revoked"
            job = (await on_a.get(f"/api/v1/jobs/{job_id}")).json()
            assert (job["state"], job["attempt"]) == ("queued", 1)  # requeued at once
        await agent.close()


async def test_leader_failover_and_reaping_of_a_stopped_replica(
    tmp_path: Path, postgres_url: str
) -> None:
    settings = _settings(tmp_path, postgres_url)
    key, token_file = await provision(settings, tmp_path)
    _, token_b = await issue_token(settings, "alice", "second", approved=True)
    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(running_coordinator(settings))
        assert await _leader([a]) is a
        b = await stack.enter_async_context(running_coordinator(settings))
        on_b = await stack.enter_async_context(api_client(b, key))
        first = ScriptedAgent(a.ws, token_file.read_text().strip())
        assert isinstance(await first.connect(), Welcome)
        job_id = await _submit(on_b, "a cube")
        assert [s.job for s in (await first.expect(Assign)).jobs] == [job_id]
        # A dies without a word: its heartbeat stops, its sockets stay open.
        await a.farm.cluster.stop()
        # B takes the lead, reaps A (its agent's job is requeued) and runs the job elsewhere.
        assert await _leader([b]) is b
        second = ScriptedAgent(b.ws, token_b)
        assert isinstance(await second.connect(), Welcome)
        reassigned = await second.expect(Assign, within=10)
        assert [(s.job, s.attempt) for s in reassigned.jobs] == [(job_id, 2)]
        # The first agent's late result for attempt 1 is refused; attempt 2 finishes once.
        await second.upload(job_id, 2)
        assert (await second.expect(ResultAck)).status == "stored"
        job = (await on_b.get(f"/api/v1/jobs/{job_id}")).json()
        assert (job["state"], job["attempt"]) == ("succeeded", 2)
        await first.close()
        await second.close()


MANY_AT_ONCE = """
[tiers.free]
rank = 0
weight = 1.0
daily_quota = 10000
max_concurrent = 64
max_steps = 64
max_variants = 4
max_guidance = 15.0
max_queued = 10000
"""


async def _health(client: httpx.AsyncClient, proc: CoordinatorProcess) -> dict[str, object]:
    return dict((await client.get(f"{proc.http}/healthz")).json())


async def test_sigkill_of_the_leader_mid_run_loses_no_job(
    tmp_path: Path, postgres_url: str
) -> None:
    """Three replica processes, one agent on each; the leader is SIGKILLed while jobs run.
    Another replica takes the lead, the dead one's agent's job is requeued, and every job
    ends exactly once with a valid GLB."""
    data = tmp_path / "data"  # shared by the replicas: the local blob store is their share
    settings = make_settings(data, database_url=postgres_url)
    key, token_a = await provision(settings, tmp_path)
    tokens = [token_a]
    for name in ("b", "c"):
        _, token = await issue_token(settings, "alice", f"agent {name}", approved=True)
        path = tmp_path / f"token-{name}"
        write_secret_file(path, token)
        tokens.append(path)
    tiers = tmp_path / "tiers.toml"
    tiers.write_text(MANY_AT_ONCE)
    env = coordinator_env(
        database_url=postgres_url,
        secret_key=secrets.token_urlsafe(32),
        replicas="true",
        replica_heartbeat_s=0.3,
        replica_dead_s=2.0,
        heartbeat_s=0.5,
        lease_s=5.0,
        reconnect_grace_s=1.0,
        tiers_file=tiers,
    )
    procs = [CoordinatorProcess(data, free_port(), env, tmp_path / f"r{i}.log") for i in range(3)]
    agents: list[subprocess.Popen[bytes]] = []
    async with httpx.AsyncClient(timeout=30) as client:
        try:
            await procs[0].start()

            async def first_leads() -> bool:
                return (await _health(client, procs[0])).get("leader") is True

            await wait_for(first_leads, 15, "the first replica to lead")
            await asyncio.gather(procs[1].start(), procs[2].start())
            # The leader's own agent is slow: it surely holds a job when its replica dies.
            delays = (3.0, 0.3, 0.3)
            agents = [
                start_agent(proc.ws, token, tmp_path / f"spool-{i}", model=f"instant:delay={d}")
                for i, (proc, token, d) in enumerate(zip(procs, tokens, delays, strict=True))
            ]
            headers = {"Authorization": f"Bearer {key}"}
            ids: list[str] = []
            for i in range(10):
                made = await client.post(
                    f"{procs[1].http}/api/v1/jobs",
                    json={"prompt": f"shape {i}", "steps": 8, "variants": 3},
                    headers=headers,
                )
                assert made.status_code == 201, made.text
                ids += [job["id"] for job in made.json()["jobs"]]

            async def states() -> list[str]:
                listing = await client.get(
                    f"{procs[2].http}/api/v1/jobs", params={"limit": 100}, headers=headers
                )
                return [job["state"] for job in listing.json()["jobs"]]

            async def some_done() -> bool:
                return (await states()).count("succeeded") >= 6

            await wait_for(some_done, 60, "the first jobs to finish")
            procs[0].stop(kill=True)  # SIGKILL the leader mid-run

            async def all_done() -> bool:
                found = await states()
                assert "failed" not in found and "cancelled" not in found, found
                return found == ["succeeded"] * len(ids)

            await wait_for(all_done, 90, "every job to succeed after the leader died")
            leaders = [await _health(client, proc) for proc in procs[1:]]
            assert [h["leader"] for h in leaders].count(True) == 1
            logs = "".join(p.log.read_text() for p in procs[1:])
            assert "reaped coordinator replica" in logs, logs
            for job_id in ids:
                glb = await client.get(
                    f"{procs[1].http}/api/v1/jobs/{job_id}/download/glb", headers=headers
                )
                assert glb.status_code == 200 and glb.content[:4] == b"glTF"
                assert int.from_bytes(glb.content[8:12], "little") == len(glb.content)
        finally:
            for agent in agents:
                stop_process(agent)
            for proc in procs:
                proc.stop()
    engine = create_async_engine(postgres_url)
    try:
        async with engine.connect() as db:
            results = await db.scalar(select(func.count()).select_from(models.Result))
            done = await db.scalar(select(func.sum(models.Agent.jobs_done)))
            per_job = await db.execute(
                select(models.Result.job_id, func.count()).group_by(models.Result.job_id)
            )
            assert {count for _, count in per_job} == {1}
            retried = await db.scalar(
                select(func.count()).select_from(models.Job).where(models.Job.attempt > 1)
            )
    finally:
        await engine.dispose()
    assert results == len(ids) and done == len(ids)  # each job stored exactly once
    assert retried  # the dead replica's agent's job ran again elsewhere
