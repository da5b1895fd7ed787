"""Coordinator replica processes on one PostgreSQL with real agents, and what they leave."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from coordinator.cli.admin_cli import issue_token, write_secret_file
from coordinator.store import models
from tests.support.coordinators import make_settings, provision
from tests.support.procs import CoordinatorProcess, coordinator_env, free_port

# Many of one user's jobs run at once (the shipped free tier runs one at a time).
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


@dataclass
class ReplicaFarm:
    procs: list[CoordinatorProcess]
    key: str  # alice's API key
    tokens: list[Path]  # one approved agent token file per replica

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


async def replica_farm(tmp_path: Path, url: str, n: int = 3) -> ReplicaFarm:
    """``n`` replica processes (not started) sharing one data dir (the local blob store
    is their share), alice with an API key and ``n`` agent tokens."""
    data = tmp_path / "data"
    settings = make_settings(data, database_url=url)
    key, first = await provision(settings, tmp_path)
    tokens = [first]
    for i in range(1, n):
        _, token = await issue_token(settings, "alice", f"agent {i}", approved=True)
        tokens.append(tmp_path / f"token-{i}")
        write_secret_file(tokens[-1], token)
    tiers = tmp_path / "tiers.toml"
    tiers.write_text(MANY_AT_ONCE)
    env = coordinator_env(
        database_url=url,
        secret_key=secrets.token_urlsafe(32),
        replicas="true",
        replica_heartbeat_s=0.3,
        replica_dead_s=2.0,
        heartbeat_s=0.5,
        lease_s=5.0,
        reconnect_grace_s=2.0,
        tiers_file=tiers,
    )
    procs = [CoordinatorProcess(data, free_port(), env, tmp_path / f"r{i}.log") for i in range(n)]
    return ReplicaFarm(procs, key, tokens)


async def health(client: httpx.AsyncClient, proc: CoordinatorProcess) -> dict[str, object]:
    return dict((await client.get(f"{proc.http}/healthz")).json())


async def submit(
    client: httpx.AsyncClient, proc: CoordinatorProcess, farm: ReplicaFarm, jobs: int
) -> list[str]:
    """``jobs`` jobs (four variants per request) submitted on ``proc``; their ids."""
    ids: list[str] = []
    while len(ids) < jobs:
        made = await client.post(
            f"{proc.http}/api/v1/jobs",
            json={"prompt": f"shape {len(ids)}", "steps": 8, "variants": min(4, jobs - len(ids))},
            headers=farm.headers,
        )
        assert made.status_code == 201, made.text
        ids += [job["id"] for job in made.json()["jobs"]]
    return ids


async def count(
    client: httpx.AsyncClient, proc: CoordinatorProcess, farm: ReplicaFarm, state: str
) -> int:
    listing = await client.get(
        f"{proc.http}/api/v1/jobs", params={"state": state, "limit": 1}, headers=farm.headers
    )
    assert listing.status_code == 200, listing.text
    return int(listing.json()["total"])


async def job_events(
    client: httpx.AsyncClient, proc: CoordinatorProcess, farm: ReplicaFarm, job_id: str
) -> AsyncGenerator[tuple[str, dict[str, object]], None]:
    """The job's API event stream on ``proc``: (event, data) pairs until it ends."""
    url = f"{proc.http}/api/v1/jobs/{job_id}/events"
    async with client.stream("GET", url, headers=farm.headers) as stream:
        assert stream.status_code == 200, await stream.aread()
        event = ""
        async for line in stream.aiter_lines():
            if line.startswith("event:"):
                event = line.partition(":")[2].strip()
            elif line.startswith("data:"):
                yield event, json.loads(line.partition(":")[2])


async def check_glbs(
    client: httpx.AsyncClient, proc: CoordinatorProcess, farm: ReplicaFarm, ids: list[str]
) -> None:
    for job_id in ids:
        glb = await client.get(f"{proc.http}/api/v1/jobs/{job_id}/download/glb",
                               headers=farm.headers)  # fmt: skip
        assert glb.status_code == 200 and glb.content[:4] == b"glTF", job_id
        assert int.from_bytes(glb.content[8:12], "little") == len(glb.content)


@dataclass(frozen=True)
class Stored:
    results: int  # result rows
    per_job: set[int]  # how many results each job with one has
    jobs_done: int  # the agents' stored-result counters, summed
    retried: int  # jobs that needed more than one attempt


async def stored(url: str) -> Stored:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as db:
            results = await db.scalar(select(func.count()).select_from(models.Result))
            done = await db.scalar(select(func.sum(models.Agent.jobs_done)))
            per_job = await db.execute(
                select(models.Result.job_id, func.count()).group_by(models.Result.job_id)
            )
            retried = await db.scalar(
                select(func.count()).select_from(models.Job).where(models.Job.attempt > 1)
            )
            return Stored(int(results or 0), {n for _, n in per_job}, int(done or 0),
                          int(retried or 0))  # fmt: skip
    finally:
        await engine.dispose()


async def assert_stored_once(url: str, ids: list[str]) -> Stored:
    """Every job in ``ids`` has exactly one result row and counted once; what was found."""
    found = await stored(url)
    assert (found.results, found.per_job, found.jobs_done) == (len(ids), {1}, len(ids))
    return found
