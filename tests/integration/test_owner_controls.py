"""The volunteer's controls against a real coordinator and real ``python -m agent`` processes.

The owner pauses and resumes their agent from the Contribute page (session
cookie + CSRF); an agent whose blocklist refuses a prompt declines the job,
which waits (no try spent) until another agent runs it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
import websockets

from coordinator.cli.admin_cli import create_user
from coordinator.store import models
from protocol import Capabilities, Hello, Welcome, decode_from_coordinator, encode
from scheduler.lifecycle import JobState
from tests.support.coordinators import (
    PASSWORD,
    AgentProcess,
    RunningCoordinator,
    api_client,
    logged_in,
    make_settings,
    provision,
    running_coordinator,
    start_agent,
    stop_agent,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


async def press(
    client: httpx.AsyncClient, agent_id: str, action: str, **form: str
) -> httpx.Response:
    token = CSRF.search((await client.get("/contribute")).text)
    assert token
    return await client.post(
        f"/contribute/agents/{agent_id}/{action}", data={"csrf_token": token.group(1), **form}
    )


def agent_id_of(token_file: Path) -> str:
    return token_file.read_text().strip().split(".")[1]


async def job_row(coord: RunningCoordinator, job_id: str) -> models.Job:
    async with coord.farm.sessions() as db:
        row = await db.get(models.Job, job_id)
        assert row is not None
        return row


async def submit(coord: RunningCoordinator, key: str, prompt: str) -> str:
    async with api_client(coord, key) as client:
        response = await client.post("/api/v1/jobs", json={"prompt": prompt, "steps": 4})
        assert response.status_code == 201, response.text
        return str(response.json()["jobs"][0]["id"])


async def until(coord: RunningCoordinator, what: str, check: object, *procs: AgentProcess) -> None:
    async def reached() -> bool:
        for proc in procs:
            assert proc.poll() is None, "an agent died"
        return bool(await check())  # type: ignore[operator]

    await wait_for(reached, 30, what)


async def test_owner_pauses_and_resumes_their_agent_from_the_contribute_page(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path / "data")
    key, token_file = await provision(settings, tmp_path)
    agent_id = agent_id_of(token_file)
    data_dir = tmp_path / "agent"
    async with running_coordinator(settings) as coord, logged_in(coord, "alice") as alice:
        agent = start_agent(
            coord.ws,
            token_file,
            tmp_path / "spool",
            "--data-dir",
            str(data_dir),
            "--prefer-own",
            "--prefer-users",
            "bob,carol",
            model="instant",
        )
        try:

            async def online() -> bool:
                return agent_id in coord.farm.agents

            await until(coord, "the agent to connect", online, agent)

            async def reported() -> bool:
                return coord.farm.agents[agent_id].prefer_own

            await until(coord, "the agent's status", reported, agent)
            page = (await alice.get("/contribute")).text
            assert "Runs first: your own jobs, bob, carol" in page
            # No CSRF token: refused, nothing changes.
            refused = await alice.post(f"/contribute/agents/{agent_id}/pause", data={})
            assert refused.status_code == 403 and not coord.farm.agents[agent_id].paused
            bad = await press(alice, agent_id, "pause", batch="later")
            assert bad.status_code == 422

            response = await press(alice, agent_id, "pause", batch="finish")
            assert response.status_code == 303, response.text
            conn = coord.farm.agents[agent_id]
            assert conn.paused and conn.pause_reason == "paused from the Contribute page"
            saved = json.loads((data_dir / "control.json").read_text())
            assert saved["paused"] is True and saved["by"] == "web"  # kept by the agent
            page = (await alice.get("/contribute/agents")).text
            assert "Paused: paused from the Contribute page" in page
            assert f"/contribute/agents/{agent_id}/resume" in page

            job_id = await submit(coord, key, "a cup")
            assert await coord.farm.dispatch_once() == 0
            assert (await job_row(coord, job_id)).state == JobState.QUEUED

            response = await press(alice, agent_id, "resume")
            assert response.status_code == 303

            async def done() -> bool:
                return (await job_row(coord, job_id)).state == JobState.SUCCEEDED

            await until(coord, "the job to finish after resume", done, agent)
            assert not coord.farm.agents[agent_id].paused
        finally:
            exit_code = await stop_agent(agent)
        assert exit_code == 0


async def test_owner_controls_other_users_and_offline_agents_cannot_be_paused(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path / "data")
    _, token_file = await provision(settings, tmp_path)
    agent_id = agent_id_of(token_file)
    await create_user(settings, "mallory", PASSWORD, None, is_admin=False)
    async with running_coordinator(settings) as coord:
        async with logged_in(coord, "mallory") as mallory:
            assert (await press(mallory, agent_id, "pause")).status_code == 404
        async with logged_in(coord, "alice") as alice:
            offline = await press(alice, agent_id, "pause")
            assert offline.status_code == 409 and "offline" in offline.text
            # An agent that speaks only protocol version 1 cannot be paused from the page.
            async with websockets.connect(coord.ws) as ws:
                hello = Hello(
                    token=token_file.read_text().strip(),
                    versions=(1,),
                    agent_version="old",
                    capabilities=Capabilities(),
                )
                await ws.send(encode(hello))
                welcome = decode_from_coordinator(await ws.recv())
                assert isinstance(welcome, Welcome) and welcome.version == 1
                old = await press(alice, agent_id, "pause")
                assert old.status_code == 409 and "older version" in old.text


async def test_owner_blocklist_declined_job_waits_then_another_agent_runs_it(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path / "data")
    key, picky_token = await provision(settings, tmp_path)
    _, other_token = await provision(settings, tmp_path, username="bob")
    picky_id, other_id = agent_id_of(picky_token), agent_id_of(other_token)
    blocklist = tmp_path / "blocked.txt"
    blocklist.write_text("# not on my GPU\nchair\n")
    async with running_coordinator(settings) as coord:
        picky = start_agent(
            coord.ws,
            picky_token,
            tmp_path / "spool-a",
            "--data-dir",
            str(tmp_path / "a"),
            "--blocklist",
            str(blocklist),
            model="instant",
        )
        other: AgentProcess | None = None
        try:

            async def online() -> bool:
                return picky_id in coord.farm.agents

            await until(coord, "the picky agent to connect", online, picky)
            job_id = await submit(coord, key, "a red chair")

            async def declined() -> bool:
                # Marked in memory first, then the job's requeue is committed.
                if picky_id not in coord.farm.declined_by(job_id):
                    return False
                return (await job_row(coord, job_id)).state == JobState.QUEUED

            await until(coord, "the job to be declined", declined, picky)
            row = await job_row(coord, job_id)
            assert row.state == JobState.QUEUED and "waiting for another agent" in (row.error or "")
            assert row.attempt_base == row.attempt  # the declined attempt spent no try
            # Only the agent that declined is connected: the job waits, never offered again.
            assert await coord.farm.dispatch_once() == 0

            other = start_agent(
                coord.ws,
                other_token,
                tmp_path / "spool-b",
                "--data-dir",
                str(tmp_path / "b"),
                model="instant",
            )

            async def done() -> bool:
                return (await job_row(coord, job_id)).state == JobState.SUCCEEDED

            await until(coord, "another agent to run the job", done, picky, other)
            assert (await job_row(coord, job_id)).agent_id in (other_id, None)
            async with coord.farm.sessions() as db:
                picky_row = await db.get(models.Agent, picky_id)
                other_row = await db.get(models.Agent, other_id)
                assert picky_row is not None and other_row is not None
                assert picky_row.jobs_done == 0 and other_row.jobs_done == 1
        finally:
            codes = [await stop_agent(p) for p in (picky, other) if p is not None]
        assert codes and all(code == 0 for code in codes)


async def test_owner_blocklist_decline_outlives_a_coordinator_restart(tmp_path: Path) -> None:
    """The decline is kept in the database: after a restart the job is still never
    offered to the agent that refused it (it would bounce off it and spend tries)."""
    settings = make_settings(tmp_path / "data")
    key, picky_token = await provision(settings, tmp_path)
    picky_id = agent_id_of(picky_token)
    blocklist = tmp_path / "blocked.txt"
    blocklist.write_text("chair\n")

    def picky_agent(coord: RunningCoordinator) -> AgentProcess:
        return start_agent(coord.ws, picky_token, tmp_path / "spool", "--data-dir",
                           str(tmp_path / "a"), "--blocklist", str(blocklist),
                           model="instant")  # fmt: skip

    async with running_coordinator(settings) as coord:
        picky = picky_agent(coord)
        try:

            async def declined() -> bool:
                if picky_id not in coord.farm.declined_by(job_id):
                    return False
                return (await job_row(coord, job_id)).state == JobState.QUEUED

            job_id = await submit(coord, key, "a red chair")
            await until(coord, "the job to be declined", declined, picky)
        finally:
            assert await stop_agent(picky) == 0
    async with running_coordinator(settings) as coord:
        assert picky_id in coord.farm.declined_by(job_id)  # read back at start-up
        picky = picky_agent(coord)
        try:

            async def online() -> bool:
                return picky_id in coord.farm.agents

            await until(coord, "the picky agent to reconnect", online, picky)
            assert await coord.farm.dispatch_once() == 0  # never offered again
            row = await job_row(coord, job_id)
            assert (row.state, row.attempt, row.attempt_base) == (JobState.QUEUED, 1, 1)
        finally:
            assert await stop_agent(picky) == 0
