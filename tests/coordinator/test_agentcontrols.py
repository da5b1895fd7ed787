"""Owner controls at the coordinator over a real socket, with a hand-driven agent."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.store import models
from protocol import Assign, Declined, Status, Welcome
from scheduler.lifecycle import JobState
from tests.support.coordinators import (
    api_client,
    make_settings,
    provision,
    running_coordinator,
    wait_for,
)
from tests.support.scripted_agent import ScriptedAgent

pytestmark = pytest.mark.timeout(60)


async def _submit(coord: object, key: str, prompt: str) -> str:
    async with api_client(coord, key) as client:  # type: ignore[arg-type]
        response = await client.post("/api/v1/jobs", json={"prompt": prompt, "steps": 4})
        assert response.status_code == 201, response.text
        return str(response.json()["jobs"][0]["id"])


async def test_agentcontrols_paused_status_stops_assignments_until_unpaused(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path / "data")
    key, token_file = await provision(settings, tmp_path)
    async with running_coordinator(settings) as coord:
        agent = ScriptedAgent(coord.ws, token_file.read_text().strip())
        assert isinstance(await agent.connect(), Welcome)
        await agent.send(Status(paused=True, reason="outside working hours"))
        await coord.farm.dispatch_once()
        job_id = await _submit(coord, key, "a cup")
        assert await coord.farm.dispatch_once() == 0
        await agent.send(Status(paused=False))
        assign = await agent.expect(Assign)
        assert assign.jobs[0].job == job_id
        await agent.close()


async def test_agentcontrols_declines_are_free_only_up_to_a_bound(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    key, token_file = await provision(settings, tmp_path)
    async with running_coordinator(settings) as coord:
        agent = ScriptedAgent(coord.ws, token_file.read_text().strip())
        assert isinstance(await agent.connect(), Welcome)
        job_id = await _submit(coord, key, "a cup")
        # Ten declines cost nothing; then each counts like a lost attempt (3 tries).
        for _ in range(10 + settings.max_attempts):
            assign = await agent.expect(Assign)
            spec = assign.jobs[0]
            await agent.send(Declined(job=spec.job, attempt=spec.attempt, reason="paused"))
            await agent.send(Status(paused=False))  # a misbehaving agent: at it again

        async def failed() -> bool:
            async with coord.farm.sessions() as db:
                row = await db.get(models.Job, job_id)
                return row is not None and row.state == JobState.FAILED

        await wait_for(failed, 20, "the bouncing job to fail")
        await agent.close()
