"""Coordinator replicas as real processes on one PostgreSQL, with real agents: a job
submitted on one replica, run by an agent on another, watched and cancelled from a
third; a leader SIGKILLed mid-run; a rolling restart of every replica under load. Every
job must end exactly once with a valid GLB (skipped without the PostgreSQL server
binaries). The database comes from tests/conftest.py's shared cluster."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import httpx
import pytest

from tests.support.coordinators import AgentProcess, start_agent, stop_process, wait_for
from tests.support.replicas import (
    assert_stored_once,
    check_glbs,
    count,
    health,
    job_events,
    replica_farm,
    stored,
    submit,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


async def test_a_job_from_replica_a_runs_on_b_while_c_watches_and_cancels_it(
    tmp_path: Path, postgres_url: str
) -> None:
    """Three processes; the only agent is connected to B. A job submitted on A runs
    there, C's event stream shows its steps, and a cancel sent to C stops the agent's
    work: the agent (one job at a time, 60 s per job) starts the next job at once. A
    long-poll on C waits for a job B's agent runs."""
    farm = await replica_farm(tmp_path, postgres_url)
    procs = farm.procs
    agent: AgentProcess | None = None
    async with httpx.AsyncClient(timeout=30) as client:
        try:
            await asyncio.gather(*(proc.start() for proc in procs))
            agent = start_agent(procs[1].ws, farm.tokens[0], tmp_path / "spool", "--max-batch",
                                "1", model="instant:delay=60,steps=60")  # fmt: skip
            [first] = await submit(client, procs[0], farm, 1)
            seen: list[tuple[str, object]] = []
            watching = contextlib.aclosing(job_events(client, procs[2], farm, first))
            async with asyncio.timeout(60), watching as events:
                async for event, data in events:
                    seen.append((event, data.get("state")))
                    if event == "progress" and int(str(data.get("step") or 0)) >= 1:
                        cancelled = await client.post(
                            f"{procs[2].http}/api/v1/jobs/{first}/cancel", headers=farm.headers
                        )
                        assert cancelled.status_code == 200, cancelled.text
                    if event == "finished":
                        break
            assert seen[-1] == ("finished", "cancelled"), seen
            assert ("progress", "running") in seen, seen
            # Had the agent kept generating the cancelled job, the next one could not
            # start for most of a minute; it runs within seconds.
            [second] = await submit(client, procs[2], farm, 1)
            watching = contextlib.aclosing(job_events(client, procs[0], farm, second))
            async with asyncio.timeout(30), watching as events:
                async for event, data in events:
                    if event == "progress" and int(str(data.get("step") or 0)) >= 1:
                        break
            # A long-poll on C holds while B's agent runs the job, and answers the cancel.
            waiting = asyncio.create_task(
                client.get(f"{procs[2].http}/api/v1/jobs/{second}", params={"wait": "30"},
                           headers=farm.headers)
            )  # fmt: skip
            await asyncio.wait([waiting], timeout=1.0)
            assert not waiting.done(), waiting.result().json()
            stopped = await client.post(
                f"{procs[0].http}/api/v1/jobs/{second}/cancel", headers=farm.headers
            )
            assert stopped.status_code == 200, stopped.text
            answer = await asyncio.wait_for(waiting, 30)
            assert answer.json()["state"] == "cancelled", answer.text
        finally:
            if agent is not None:
                stop_process(agent)
            for proc in procs:
                proc.stop()
    found = await stored(postgres_url)
    assert found.results == 0  # neither job stored a model


async def test_sigkill_of_the_leader_mid_run_loses_no_job(
    tmp_path: Path, postgres_url: str
) -> None:
    """One agent on each replica (each knows only its own); the leader is SIGKILLed while
    jobs run. Another replica takes the lead and reaps the dead one, whose agent's jobs
    run again elsewhere; every job is stored exactly once."""
    farm = await replica_farm(tmp_path, postgres_url)
    procs, agents = farm.procs, list[AgentProcess]()
    async with httpx.AsyncClient(timeout=30) as client:
        try:
            await procs[0].start()

            async def first_leads() -> bool:
                return (await health(client, procs[0])).get("leader") is True

            await wait_for(first_leads, 15, "the first replica to lead")
            await asyncio.gather(procs[1].start(), procs[2].start())
            # The leader's own agent is slow: it surely holds a job when its replica dies.
            delays = (3.0, 0.3, 0.3)
            for i, (proc, token, d) in enumerate(zip(procs, farm.tokens, delays, strict=True)):
                agents.append(start_agent(proc.ws, token, tmp_path / f"spool-{i}",
                                          model=f"instant:delay={d}"))  # fmt: skip
            ids = await submit(client, procs[1], farm, 100)

            async def some_done() -> bool:
                return await count(client, procs[2], farm, "succeeded") >= 6

            await wait_for(some_done, 60, "the first jobs to finish")
            procs[0].stop(kill=True)  # SIGKILL the leader mid-run

            async def all_done() -> bool:
                for state in ("failed", "cancelled"):
                    assert await count(client, procs[2], farm, state) == 0
                return await count(client, procs[1], farm, "succeeded") == len(ids)

            await wait_for(all_done, 90, "every job to succeed after the leader died")
            leaders = [await health(client, proc) for proc in procs[1:]]
            assert [h["leader"] for h in leaders].count(True) == 1
            logs = "".join(p.log.read_text() for p in procs[1:])
            assert "reaped coordinator replica" in logs, logs
            await check_glbs(client, procs[1], farm, ids)
        finally:
            for agent in agents:
                stop_process(agent)
            for proc in procs:
                proc.stop()
    found = await assert_stored_once(postgres_url, ids)
    assert found.retried  # the dead replica's agent's job ran again elsewhere


async def test_rolling_restart_of_every_replica_under_load_loses_nothing(
    tmp_path: Path, postgres_url: str
) -> None:
    """100 jobs; the agents know every replica's URL; the replicas are restarted one at a
    time while the jobs run (agents move to another replica with their running jobs)."""
    farm = await replica_farm(tmp_path, postgres_url)
    procs, agents = farm.procs, list[AgentProcess]()
    async with httpx.AsyncClient(timeout=30) as client:
        try:
            await asyncio.gather(*(proc.start() for proc in procs))
            for i, token in enumerate(farm.tokens):
                urls = ",".join(procs[(i + k) % len(procs)].ws for k in range(len(procs)))
                agents.append(start_agent(urls, token, tmp_path / f"spool-{i}", "--max-batch",
                                          "2", model="instant:delay=2.5"))  # fmt: skip
            ids = await submit(client, procs[0], farm, 100)
            for i, proc in enumerate(procs):
                done = await count(client, procs[(i + 1) % 3], farm, "succeeded")

                async def progressed(before: int = done, on: int = (i + 1) % 3) -> bool:
                    return await count(client, procs[on], farm, "succeeded") >= before + 4

                await wait_for(progressed, 60, "jobs to finish before the next restart")
                proc.stop()  # SIGTERM: a clean stop; its agents go to another replica
                await proc.start()

            async def all_done() -> bool:
                for state in ("failed", "cancelled"):
                    assert await count(client, procs[1], farm, state) == 0
                return await count(client, procs[2], farm, "succeeded") == len(ids)

            await wait_for(all_done, 150, "every job to succeed through the restarts")
            await check_glbs(client, procs[0], farm, ids)
        finally:
            for agent in agents:
                stop_process(agent)
            for proc in procs:
                proc.stop()
    await assert_stored_once(postgres_url, ids)
