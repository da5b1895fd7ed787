"""Leases and requeue over real WebSockets: a vanished agent never loses a job."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from coordinator.cli.admin_cli import issue_token
from coordinator.services import admin_jobs
from coordinator.store import models
from protocol import Assign, ResultAck, Welcome
from tests.support.coordinators import (
    api_client,
    make_settings,
    provision,
    running_coordinator,
    start_agent,
    stop_agent,
    wait_for,
)
from tests.support.scripted_agent import ScriptedAgent


async def _job(client, job_id: str) -> dict:  # type: ignore[no-untyped-def]
    return (await client.get(f"/api/v1/jobs/{job_id}")).json()


async def test_lease_requeues_job_of_vanished_agent_and_rejects_its_late_result(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path / "data", lease_s=2.0, heartbeat_s=0.5, reconnect_grace_s=0.3)
    key, token_file = await provision(settings, tmp_path)
    _, token_b = await issue_token(settings, "alice", "second", approved=True)
    async with running_coordinator(settings) as coord, api_client(coord, key) as client:
        first = ScriptedAgent(coord.ws, token_file.read_text().strip())
        assert isinstance(await first.connect(), Welcome)
        job_id = (await client.post("/api/v1/jobs", json={"prompt": "a cube", "steps": 8})).json()[
            "jobs"
        ][0]["id"]
        assign = await first.expect(Assign)
        assert [(s.job, s.attempt) for s in assign.jobs] == [(job_id, 1)]
        await first.close()  # vanishes mid-job, without a word

        second = ScriptedAgent(coord.ws, token_b)
        assert isinstance(await second.connect(), Welcome)
        reassigned = await second.expect(Assign, within=15)
        assert [(s.job, s.attempt) for s in reassigned.jobs] == [(job_id, 2)]
        assert (await _job(client, job_id))["state"] == "assigned"

        # The first agent comes back with its late result for attempt 1.
        await first.connect(holding=((job_id, 1),))
        await first.upload(job_id, 1)
        late = await first.expect(ResultAck)
        assert (late.status, late.attempt) == ("rejected", 1)
        assert (await _job(client, job_id))["state"] == "assigned"  # attempt 2 unharmed

        await second.upload(job_id, 2)
        assert (await second.expect(ResultAck)).status == "stored"
        job = await _job(client, job_id)
        assert (job["state"], job["attempt"]) == ("succeeded", 2)
        # Re-sending the stored result is idempotent.
        await second.upload(job_id, 2)
        assert (await second.expect(ResultAck)).status == "duplicate"
        await first.close()
        await second.close()


async def test_job_fails_with_reason_after_max_attempts(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path / "data", lease_s=2.0, heartbeat_s=0.5, reconnect_grace_s=0.2, max_attempts=2
    )
    key, token_file = await provision(settings, tmp_path)
    async with running_coordinator(settings) as coord, api_client(coord, key) as client:
        job_id = (await client.post("/api/v1/jobs", json={"prompt": "a cube", "steps": 8})).json()[
            "jobs"
        ][0]["id"]
        for attempt in (1, 2):
            agent = ScriptedAgent(coord.ws, token_file.read_text().strip())
            await agent.connect()
            assign = await agent.expect(Assign, within=15)
            assert assign.jobs[0].attempt == attempt
            await agent.close()

        async def failed() -> bool:
            return (await _job(client, job_id))["state"] == "failed"

        await wait_for(failed, 15, "the job to fail")
        job = await _job(client, job_id)
        assert "gave up after 2 attempts" in job["error"]

        # An admin requeue gives fresh tries, but attempt numbers keep growing so a
        # straggler's result for attempt 1 or 2 can never pass for a new attempt.
        farm = coord.farm
        async with farm.sessions() as db:
            row = await db.get(models.Job, job_id)
            admin = models.User(username="root", password_hash="x", is_admin=True, created_at=0.0)
            await admin_jobs.requeue(farm, db, row, admin)
        agent = ScriptedAgent(coord.ws, token_file.read_text().strip())
        await agent.connect()
        assert (await agent.expect(Assign, within=15)).jobs[0].attempt == 3
        await agent.close()
        agent = ScriptedAgent(coord.ws, token_file.read_text().strip())
        await agent.connect()
        assert (await agent.expect(Assign, within=15)).jobs[0].attempt == 4  # not failed
        await agent.upload(job_id, 4)
        assert (await agent.expect(ResultAck)).status == "stored"
        await agent.close()


@pytest.mark.slow
async def test_killed_agent_process_job_finishes_on_another_agent(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", lease_s=3.0, heartbeat_s=0.5, reconnect_grace_s=0.5)
    key, token_a = await provision(settings, tmp_path)
    _, token_b = await issue_token(settings, "alice", "survivor", approved=True)
    token_b_file = tmp_path / "token-b"
    token_b_file.write_text(token_b)
    async with running_coordinator(settings) as coord, api_client(coord, key) as client:
        slow = start_agent(coord.ws, token_a, tmp_path / "spool-a", model="instant:delay=60")
        try:
            job_id = (
                await client.post("/api/v1/jobs", json={"prompt": "a cup", "steps": 8})
            ).json()["jobs"][0]["id"]

            async def running() -> bool:
                return (await _job(client, job_id))["state"] == "running"

            await wait_for(running, 60, "the slow agent to start the job")
            await stop_agent(slow, signal.SIGKILL)
            survivor = start_agent(coord.ws, token_b_file, tmp_path / "spool-b", model="instant")
            try:

                async def done() -> bool:
                    return (await _job(client, job_id))["state"] == "succeeded"

                await wait_for(done, 60, "the job to finish on the surviving agent")
            finally:
                exit_code = await stop_agent(survivor)
            assert exit_code == 0
        finally:
            await stop_agent(slow, signal.SIGKILL)
        job = await _job(client, job_id)
        assert job["attempt"] == 2
        assert job["result"]["agent_id"] == token_b.split(".")[1]
