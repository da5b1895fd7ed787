"""Approve, drain and revoke against real agent processes over a real coordinator.

The admin acts through the real HTML routes (session cookie + CSRF); agents are
``python -m agent`` processes. The approval test runs the tiny Shap-E model;
drain and revoke use the ``instant`` generator with a delay, which makes "a job
is running right now" last long enough to act on, without torch start-up costs.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import websockets

from coordinator.cli.admin_cli import create_user
from coordinator.store import models
from protocol import (
    SUPPORTED_VERSIONS,
    Capabilities,
    CloseCode,
    Error,
    Hello,
    decode_from_coordinator,
    encode,
)
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


@asynccontextmanager
async def admin_session(coord: RunningCoordinator) -> AsyncIterator[httpx.AsyncClient]:
    """An administrator logged in through the login form, ready to post admin actions."""
    await create_user(coord.settings, "root", PASSWORD, None, is_admin=True)
    async with logged_in(coord, "root") as client:
        yield client


async def act(client: httpx.AsyncClient, agent_id: str, action: str) -> None:
    page = await client.get("/admin/agents")
    token = CSRF.search(page.text)
    assert token, "no CSRF token on the agents page"
    response = await client.post(
        f"/admin/agents/{agent_id}/{action}", data={"csrf_token": token.group(1)}
    )
    assert response.status_code == 303, (action, response.status_code, response.text[:300])


def agent_id_of(token_file: Path) -> str:
    return token_file.read_text().strip().split(".")[1]


async def job(coord: RunningCoordinator, job_id: str) -> models.Job:
    async with coord.farm.sessions() as db:
        row = await db.get(models.Job, job_id)
        assert row is not None
        return row


async def submit(coord: RunningCoordinator, key: str, prompt: str, steps: int = 4) -> str:
    async with api_client(coord, key) as client:
        response = await client.post("/api/v1/jobs", json={"prompt": prompt, "steps": steps})
        assert response.status_code == 201, response.text
        return str(response.json()["jobs"][0]["id"])


async def until_state(
    coord: RunningCoordinator, job_id: str, states: set[str], within: float, *procs: AgentProcess
) -> models.Job:
    found: models.Job | None = None

    async def reached() -> bool:
        nonlocal found
        for proc in procs:
            assert proc.poll() is None, "an agent died"
        found = await job(coord, job_id)
        return found.state in states

    await wait_for(reached, within, f"job {job_id} to reach {sorted(states)}")
    assert found is not None
    return found


async def connected(coord: RunningCoordinator, agent_id: str, within: float = 60) -> None:
    async def online() -> bool:
        return agent_id in coord.farm.agents

    await wait_for(online, within, f"agent {agent_id} to connect")


async def test_agent_admin_unapproved_agent_waits_for_approval(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    key, token_file = await provision(settings, tmp_path, approved=False)
    agent_id = agent_id_of(token_file)
    async with running_coordinator(settings) as coord, admin_session(coord) as admin:
        job_id = await submit(coord, key, "a red chair")
        agent = start_agent(coord.ws, token_file, tmp_path / "spool")
        try:
            await connected(coord, agent_id)
            # Connected and idle, yet no dispatch pass may give it the job.
            assert await coord.farm.dispatch_once() == 0
            assert (await job(coord, job_id)).state == JobState.QUEUED
            assert not coord.farm.agents[agent_id].approved
            await act(admin, agent_id, "approve")
            done = await until_state(coord, job_id, {"succeeded", "failed"}, 90, agent)
            assert done.state == JobState.SUCCEEDED, done.error
        finally:
            exit_code = await stop_agent(agent)
        assert exit_code == 0


async def test_agent_admin_drained_agent_finishes_its_job_and_takes_no_more(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path / "data")
    key, token_file = await provision(settings, tmp_path)
    agent_id = agent_id_of(token_file)
    async with running_coordinator(settings) as coord, admin_session(coord) as admin:
        agent = start_agent(
            coord.ws, token_file, tmp_path / "spool", model="instant:delay=3,steps=6"
        )
        try:
            await connected(coord, agent_id)
            first = await submit(coord, key, "a cup")
            await until_state(coord, first, {"running"}, 20, agent)
            await act(admin, agent_id, "drain")
            second = await submit(coord, key, "a vase", steps=5)  # no batching with the first
            done = await until_state(coord, first, {"succeeded", "failed"}, 20, agent)
            assert done.state == JobState.SUCCEEDED, done.error
            # Still connected and idle, but drained: nothing more is handed out.
            conn = coord.farm.agents[agent_id]
            assert coord.farm.is_drained(agent_id) and not conn.session.held
            assert await coord.farm.dispatch_once() == 0
            assert (await job(coord, second)).state == JobState.QUEUED
            assert agent.poll() is None
        finally:
            exit_code = await stop_agent(agent)
        assert exit_code == 0


async def refused(coord: RunningCoordinator, token: str) -> tuple[str, int | None]:
    """Dial with ``token`` like an agent; the coordinator's error code and close code."""
    async with websockets.connect(coord.ws) as ws:
        hello = Hello(
            token=token, versions=SUPPORTED_VERSIONS, agent_version="t", capabilities=Capabilities()
        )
        await ws.send(encode(hello))
        message = decode_from_coordinator(await ws.recv())
        assert isinstance(message, Error), message
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
        return message.code, ws.close_code


async def test_agent_admin_revoked_agent_is_cut_off_and_its_job_moves(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    key, slow_token = await provision(settings, tmp_path, "alice")
    _, spare_token = await provision(settings, tmp_path, "bob", approved=False)
    slow_id, spare_id = agent_id_of(slow_token), agent_id_of(spare_token)
    async with running_coordinator(settings) as coord, admin_session(coord) as admin:
        slow = start_agent(
            coord.ws, slow_token, tmp_path / "spool-a", model="instant:delay=60,steps=60"
        )
        spare = start_agent(coord.ws, spare_token, tmp_path / "spool-b", model="instant")
        try:
            await connected(coord, slow_id)
            await connected(coord, spare_id)
            job_id = await submit(coord, key, "a teapot")
            running = await until_state(coord, job_id, {"running"}, 20, slow, spare)
            assert running.agent_id == slow_id
            await act(admin, slow_id, "revoke")
            assert await asyncio.to_thread(slow.wait, 20) == 3  # refused: exit code 3
            assert (await job(coord, job_id)).state == JobState.QUEUED
            assert await refused(coord, slow_token.read_text().strip()) == (
                "revoked",
                CloseCode.BAD_TOKEN,
            )
            await act(admin, spare_id, "approve")
            done = await until_state(coord, job_id, {"succeeded", "failed"}, 20, spare)
            assert done.state == JobState.SUCCEEDED, done.error
            async with coord.farm.sessions() as db:
                result = await db.get(models.Result, job_id)
                assert result is not None and result.agent_id == spare_id
        finally:
            await stop_agent(slow)
            assert await stop_agent(spare) == 0
