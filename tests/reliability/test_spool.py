"""A network cut in the middle of an upload loses no finished work.

The agent spools each result before uploading it and names it in ``hello``
after reconnecting; the coordinator keeps that attempt's lease and stores the
re-sent copy once.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.support.coordinators import (
    api_client,
    make_settings,
    provision,
    running_coordinator,
    start_agent,
    stop_agent,
    wait_for,
)
from tests.support.netproxy import UploadProxy
from tests.support.procs import read_ledger, spooled

pytestmark = pytest.mark.slow

# Small chunks: the 736-byte instant GLB travels in three binary frames.
SETTINGS = {"chunk_bytes": 256, "lease_s": 20.0, "reconnect_grace_s": 20.0}


async def test_spool_upload_cut_midway_is_resent_and_stored_once(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", **SETTINGS)
    key, token_file = await provision(settings, tmp_path, admin=True)
    spool = tmp_path / "spool"
    async with (
        running_coordinator(settings) as coord,
        UploadProxy(coord.port, "cut", after_binary=1) as proxy,
        api_client(coord, key) as client,
    ):
        agent = start_agent(proxy.ws, token_file, spool, model="instant")
        try:
            response = await client.post("/api/v1/jobs", json={"prompt": "a cut", "steps": 2})
            job_id = response.json()["jobs"][0]["id"]

            async def succeeded() -> bool:
                assert agent.poll() is None, "the agent died"
                return (await client.get(f"/api/v1/jobs/{job_id}")).json()["state"] == "succeeded"

            await wait_for(succeeded, 60, "the job to succeed after the cut")
            assert proxy.triggered.is_set() and proxy.connections >= 2

            async def spool_empty() -> bool:
                return not spooled(spool)

            await wait_for(spool_empty, 10, "the acknowledged result to leave the spool")
            job = (await client.get(f"/api/v1/jobs/{job_id}")).json()
        finally:
            # In a thread: the coordinator in this loop must answer the close handshake.
            assert await stop_agent(agent) == 0
    # Attempt 1 was kept across the reconnect: the spooled copy was stored, not a rerun.
    assert job["attempt"] == 1
    ledger = read_ledger(settings.data_dir)
    assert ledger.results == ledger.files == {job_id: job["result"]["sha256"]}
    assert ledger.jobs_done == 1 and ledger.partials == []
    glb = (settings.data_dir / "models" / job_id[:2] / f"{job_id}.glb").read_bytes()
    assert hashlib.sha256(glb).hexdigest() == job["result"]["sha256"]
