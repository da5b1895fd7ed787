"""The coordinator dies (SIGKILL) while an upload is half received, and comes back.

Jobs, users and results survive in SQLite; the half upload leaves nothing on
disk; the agent reconnects, names its spooled result in ``hello`` within the
restart grace, re-sends it and the coordinator stores it once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.support.coordinators import make_settings, provision, start_agent, stop_agent, wait_for
from tests.support.netproxy import UploadProxy
from tests.support.procs import CoordinatorProcess, coordinator_env, free_port, read_ledger
from tests.support.procs import spooled as spool_entries

pytestmark = pytest.mark.slow

SETTINGS = {"chunk_bytes": 256, "lease_s": 20.0, "reconnect_grace_s": 20.0, "heartbeat_s": 0.5}


async def test_restart_mid_upload_keeps_the_finished_work(tmp_path: Path) -> None:
    data = tmp_path / "data"
    key, token_file = await provision(make_settings(data, **SETTINGS), tmp_path, admin=True)
    coord = CoordinatorProcess(data, free_port(), coordinator_env(**SETTINGS),
                               tmp_path / "coordinator.log")  # fmt: skip
    spool = tmp_path / "spool"
    await coord.start()
    agent = None
    headers = {"Authorization": f"Bearer {key}"}
    try:
        async with (
            UploadProxy(coord.port, "stall", after_binary=1) as proxy,
            httpx.AsyncClient(base_url=coord.http, headers=headers, timeout=10) as client,
        ):
            agent = start_agent(proxy.ws, token_file, spool, model="instant")
            response = await client.post("/api/v1/jobs", json={"prompt": "a crash", "steps": 2})
            job_id = response.json()["jobs"][0]["id"]
            async with asyncio.timeout(60):
                await proxy.triggered.wait()

            async def on_disk() -> bool:  # written while the upload goes out
                return spool_entries(spool) == [f"{job_id}.1"]

            await wait_for(on_disk, 10, "the finished result to be on disk, unacknowledged")
            coord.stop(kill=True)  # one chunk of three received: the upload is half done
            proxy.cut()
            await coord.start()

            async def succeeded() -> bool:
                assert agent is not None and agent.poll() is None, "the agent died"
                return (await client.get(f"/api/v1/jobs/{job_id}")).json()["state"] == "succeeded"

            await wait_for(succeeded, 60, "the job to succeed after the restart")
            job = (await client.get(f"/api/v1/jobs/{job_id}")).json()

            async def spool_empty() -> bool:
                return not spool_entries(spool)

            await wait_for(spool_empty, 10, "the acknowledged result to leave the spool")
    finally:
        if agent is not None:
            await stop_agent(agent)  # the proxy runs in this loop
        coord.stop()
    assert job["attempt"] == 1, job  # the spooled copy was stored, the job was not rerun
    ledger = read_ledger(data)
    assert ledger.results == ledger.files == {job_id: job["result"]["sha256"]}
    assert ledger.jobs_done == 1 and ledger.partials == []
