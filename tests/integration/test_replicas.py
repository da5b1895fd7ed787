"""Coordinator replicas on one PostgreSQL (replica mode): any replica serves anyone.

Three replicas run in this event loop on three ports, sharing one throwaway
PostgreSQL cluster (skipped with the reason without the server binaries). Agents are
scripted over real WebSockets, browsers are raw SSE sockets, clients use the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from coordinator.cli.admin_cli import issue_token
from coordinator.store.migrations import upgrade_sync
from protocol import Accepted, Assign, Cancel, Progress, ResultAck, Welcome
from tests.support.coordinators import (
    RunningCoordinator,
    api_client,
    make_settings,
    provision,
    running_coordinator,
)
from tests.support.postgres import copy_database, throwaway_postgres
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
async def replicas(tmp_path: Path, url: str, n: int = 3) -> AsyncIterator[list[RunningCoordinator]]:
    settings = _settings(tmp_path, url)
    async with contextlib.AsyncExitStack() as stack:
        coords = [await stack.enter_async_context(running_coordinator(settings)) for _ in range(n)]
        yield coords


def _settings(tmp_path: Path, url: str):  # type: ignore[no-untyped-def]
    return make_settings(
        tmp_path / "data",
        database_url=url,
        replicas=True,
        replica_heartbeat_s=0.2,
        replica_dead_s=1.0,
    )


async def _leader(coords: list[RunningCoordinator], within: float = 10.0) -> RunningCoordinator:
    async with asyncio.timeout(within):
        while True:
            leading = [c for c in coords if c.farm.cluster.leading]
            if leading:
                assert len(leading) == 1
                return leading[0]
            await asyncio.sleep(0.05)  # leadership is taken by a 1 s retry, nothing to await


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
