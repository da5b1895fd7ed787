"""Chaos: agents SIGKILLed and restarted at random moments, the coordinator killed once.

Every job must end succeeded exactly once (or failed with a clear reason after
its attempts), with one stored file per succeeded job and nothing else in the
blob store, no partial files, no job stuck, and no finished work left unsent.
"""

from __future__ import annotations

import asyncio
import random
import signal
from pathlib import Path

import httpx
import pytest

from coordinator.cli.admin_cli import issue_token, write_secret_file
from tests.support.coordinators import (
    AgentProcess,
    api_client,
    make_settings,
    provision,
    start_agent,
    stop_process,
    wait_for,
)
from tests.support.procs import (
    TERMINAL,
    CoordinatorProcess,
    coordinator_env,
    free_port,
    read_ledger,
    spooled,
)

pytestmark = pytest.mark.slow

SEED = 20261107
JOBS = 100
AGENTS = 4
MAX_ATTEMPTS = 6
GENERATOR = "instant:delay=0.3,steps=3"  # long enough that kills land mid-job
TIMINGS = {"heartbeat_s": 0.5, "lease_s": 3.0, "reconnect_grace_s": 1.5}


async def _states(client: httpx.AsyncClient, ids: list[str]) -> dict[str, str]:
    states: dict[str, str] = {}
    for offset in range(0, JOBS, 100):
        page = (await client.get("/api/v1/jobs", params={"limit": 100, "offset": offset})).json()
        states.update({job["id"]: job["state"] for job in page["jobs"]})
    return {job_id: states.get(job_id, "?") for job_id in ids}


@pytest.mark.timeout(180)
async def test_chaos_every_job_ends_once_with_no_orphans(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    data = tmp_path / "data"
    settings = make_settings(data, max_attempts=MAX_ATTEMPTS, **TIMINGS)
    key, first_token = await provision(settings, tmp_path, "ops", admin=True)
    tokens = [first_token]
    for i in range(1, AGENTS):
        token_file = tmp_path / f"agent-{i}-token"
        write_secret_file(token_file, (await issue_token(settings, "ops", f"a{i}", True))[1])
        tokens.append(token_file)
    coord = CoordinatorProcess(
        data, free_port(), coordinator_env(max_attempts=MAX_ATTEMPTS, **TIMINGS),
        tmp_path / "coordinator.log",
    )  # fmt: skip
    spools = [tmp_path / f"spool-{i}" for i in range(AGENTS)]
    agents: list[AgentProcess] = []
    kills = 0
    await coord.start()
    try:
        agents = [
            start_agent(coord.ws, tokens[i], spools[i], "--log-level", "WARNING", model=GENERATOR)
            for i in range(AGENTS)
        ]
        client = api_client(coord, key)  # type: ignore[arg-type]
        ids: list[str] = []
        for i in range(JOBS):
            response = await client.post(
                "/api/v1/jobs", json={"prompt": f"chaos {i}", "steps": 3, "seed": i}
            )
            assert response.status_code == 201, response.text
            ids.append(response.json()["jobs"][0]["id"])

        restarted = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120
        while True:
            try:
                states = await _states(client, ids)
            except httpx.TransportError:
                states = {}
            if states and all(s in TERMINAL for s in states.values()):
                break
            assert loop.time() < deadline, f"jobs stuck: {sorted(states.values())}"
            done = sum(s in TERMINAL for s in states.values())
            if not restarted and done >= JOBS * 0.4:
                # Kill -9 the coordinator mid-run and bring it back on the same port.
                restarted = True
                await client.aclose()
                coord.stop(kill=True)
                await coord.start()
                client = api_client(coord, key)  # type: ignore[arg-type]
                continue
            if kills < 25:
                victim = rng.randrange(AGENTS)
                agents[victim].send_signal(signal.SIGKILL)
                agents[victim].wait(10)
                kills += 1
                agents[victim] = start_agent(coord.ws, tokens[victim], spools[victim],
                                             "--log-level", "WARNING", model=GENERATOR)  # fmt: skip
            # A random moment for the next kill (chaos schedule, not synchronisation);
            # the first five come quickly, so a fast run still sees them all.
            await asyncio.sleep(rng.uniform(0.05, 0.3) if kills < 5 else rng.uniform(0.2, 1.2))
        assert restarted, "the run ended before the coordinator restart"

        # Finished work still spooled (e.g. for a requeued attempt) must drain: each
        # copy gets an answer and leaves the spool.
        async def spools_empty() -> bool:
            return not any(spooled(spool) for spool in spools)

        await wait_for(spools_empty, 30, "agent spools to drain")
        await client.aclose()
    finally:
        for proc in agents:
            stop_process(proc)
        coord.stop()

    ledger = read_ledger(data)
    assert len(ledger.states) == JOBS
    succeeded = {j for j, s in ledger.states.items() if s == "succeeded"}
    failed = {j for j, s in ledger.states.items() if s == "failed"}
    assert succeeded | failed == set(ledger.states), ledger.states
    for job_id in failed:
        assert f"gave up after {MAX_ATTEMPTS} attempts" in (ledger.errors[job_id] or ""), (
            ledger.errors[job_id]
        )
    assert len(failed) <= JOBS // 10, f"too many jobs failed: {len(failed)}"
    # Stored exactly once: one result row and one counted success per job.
    assert set(ledger.results) == succeeded
    assert ledger.jobs_done == len(succeeded)
    # The blob store holds exactly the succeeded jobs' files, intact, and no partials.
    assert ledger.files == ledger.results
    assert ledger.partials == []
    assert kills >= 5
