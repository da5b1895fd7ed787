"""Mesh options end to end over real sockets: a protocol-v3 agent process decimates
before uploading; for a protocol-v2 agent the coordinator does; a job for 3D
printing gets a watertight STL download and says so."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import httpx
import pygltflib
import pytest
import trimesh

from agent.spheres import sphere_model
from protocol import Assign, ResultAck
from protocol.limits import FACE_TOLERANCE
from tests.support.coordinators import (
    api_client,
    logged_in,
    make_settings,
    provision,
    running_coordinator,
    start_agent,
    stop_agent,
    wait_for,
)
from tests.support.scripted_agent import ScriptedAgent

pytestmark = pytest.mark.slow

TARGET = 2_000
SPHERE = 20_000  # faces the instant agent's sphere has before decimation


async def _finished(client: httpx.AsyncClient, job_id: str, within: float) -> dict[str, Any]:
    job: dict[str, Any] = {}

    async def done() -> bool:
        nonlocal job
        job = (await client.get(f"/api/v1/jobs/{job_id}")).json()
        return job["state"] in {"succeeded", "failed", "cancelled"}

    await wait_for(done, within, f"job {job_id} to finish")
    assert job["state"] == "succeeded", job
    return job


async def _submit_mesh_job(
    client: httpx.AsyncClient, agent: ScriptedAgent, mesh: dict[str, Any]
) -> tuple[str, Assign]:
    """Submit "a ball" with these mesh options; the job and the agent's assignment of it."""
    created = await client.post("/api/v1/jobs", json={"prompt": "a ball", "steps": 2, "mesh": mesh})
    assert created.status_code == 201, created.text
    return created.json()["jobs"][0]["id"], await agent.expect(Assign)


def _load(data: bytes, file_type: str) -> trimesh.Trimesh:
    # STL stores each triangle's corners on their own: merge them (as slicers do).
    process = file_type == "stl"
    return trimesh.load(io.BytesIO(data), file_type=file_type, force="mesh", process=process)


async def test_mesh_options_v3_agent_decimates_and_stl_is_printable(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    key, token_file = await provision(settings, tmp_path)
    async with running_coordinator(settings) as coord:
        agent = start_agent(
            coord.ws, token_file, tmp_path / "spool", model=f"instant:sphere={SPHERE}"
        )
        try:
            async with api_client(coord, key) as client:
                mesh = {"target_faces": TARGET, "printable": True}
                # Seed 7: its sphere repairs watertight (about 1 seed in 100 does not).
                body = {"prompt": "a ball", "steps": 2, "seed": 7, "mesh": mesh}
                created = await client.post("/api/v1/jobs", json=body)
                assert created.status_code == 201, created.text
                job_id = created.json()["jobs"][0]["id"]
                job = await _finished(client, job_id, 120)
                glb = (await client.get(f"/api/v1/jobs/{job_id}/download/glb")).content
                stl = (await client.get(f"/api/v1/jobs/{job_id}/download/stl")).content
                again = (await client.get(f"/api/v1/jobs/{job_id}/download/stl")).content
            conversions = coord.farm.models.conversions
            async with logged_in(coord, "alice") as browser:
                page = (await browser.get(f"/jobs/{job_id}")).text
        finally:
            assert await stop_agent(agent) == 0
    result = job["result"]
    assert job["mesh"] == mesh
    # The agent decimated (the coordinator had nothing left to do: see the v2 test).
    assert TARGET * 0.9 <= result["faces"] <= TARGET * (1 + FACE_TOLERANCE)
    model = _load(glb, "glb")
    assert len(model.faces) == result["faces"]
    attributes = json.loads(pygltflib.GLTF2.load_from_bytes(glb).to_json())["meshes"][0]
    assert "COLOR_0" in attributes["primitives"][0]["attributes"]  # colours kept
    # The sphere is open at both poles; the printable STL is closed.
    assert not model.is_watertight
    printable = _load(stl, "stl")
    assert printable.is_watertight and printable.volume > 0
    assert result["watertight"] is True
    assert stl == again and conversions == 0  # made once, when the result was stored
    assert "the STL is watertight, ready for a slicer" in page
    assert "about 2,000 faces, for 3D printing" in page


async def test_mesh_options_coordinator_decimates_for_a_v2_agent(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    key, token_file = await provision(settings, tmp_path)
    glb, _, faces, _ = sphere_model(SPHERE, 7, None)
    async with running_coordinator(settings) as coord:
        agent = ScriptedAgent(coord.ws, token_file.read_text().strip(), versions=(1, 2))
        welcome = await agent.connect()
        assert welcome.version == 2
        try:
            async with api_client(coord, key) as client:
                mesh = {"target_faces": TARGET, "printable": True}
                job_id, assign = await _submit_mesh_job(client, agent, mesh)
                # What a version-2 agent reads: no field it does not know.
                wire = json.loads(agent.frames[-1])
                assert "mesh" not in wire["jobs"][0]
                assert assign.jobs[0].mesh is None
                await agent.upload(job_id, assign.jobs[0].attempt, glb)
                job = await _finished(client, job_id, 60)
                stored = (await client.get(f"/api/v1/jobs/{job_id}/download/glb")).content
                stl = (await client.get(f"/api/v1/jobs/{job_id}/download/stl")).content
        finally:
            await agent.close()
    assert faces > SPHERE * 0.9
    assert TARGET * 0.9 <= job["result"]["faces"] <= TARGET * (1 + FACE_TOLERANCE)
    assert len(_load(stored, "glb").faces) == job["result"]["faces"]
    assert job["result"]["watertight"] is True and _load(stl, "stl").is_watertight


async def test_mesh_options_v3_agent_receives_them_on_the_wire(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    key, token_file = await provision(settings, tmp_path)
    async with running_coordinator(settings) as coord:
        agent = ScriptedAgent(coord.ws, token_file.read_text().strip())
        assert (await agent.connect()).version == 3
        try:
            async with api_client(coord, key) as client:
                _, assign = await _submit_mesh_job(client, agent, {"target_faces": "low"})
        finally:
            await agent.close()
    assert assign.jobs[0].mesh.target_faces == 5_000 and not assign.jobs[0].mesh.printable


async def test_mesh_options_kept_across_a_coordinator_restart(tmp_path: Path) -> None:
    # The farm keeps a leased job's options in memory for its result (no read then);
    # a restart reloads them with the held jobs, so a result the agent brings back
    # to the new process is still shaped as the job asked. The held job waits for its
    # agent for the reconnect grace after the start: the tests' 1 s ran out on a loaded
    # machine before the agent got back (its result was then "rejected").
    settings = make_settings(tmp_path / "data", reconnect_grace_s=30.0)
    key, token_file = await provision(settings, tmp_path)
    token = token_file.read_text().strip()
    glb, _, faces, _ = sphere_model(SPHERE, 7, None)
    async with running_coordinator(settings) as coord:
        agent = ScriptedAgent(coord.ws, token, versions=(1, 2))  # the coordinator decimates
        await agent.connect()
        try:
            async with api_client(coord, key) as client:
                mesh = {"target_faces": TARGET, "printable": True}
                job_id, assign = await _submit_mesh_job(client, agent, mesh)
                attempt = assign.jobs[0].attempt
        finally:
            await agent.close()
    async with running_coordinator(settings) as coord:
        kept = coord.farm.mesh_of(job_id)
        assert kept is not None and (kept.target_faces, kept.printable) == (TARGET, True)
        agent = ScriptedAgent(coord.ws, token, versions=(1, 2))
        await agent.connect(holding=((job_id, attempt),))
        reads = coord.farm.reader.units
        try:
            await agent.upload(job_id, attempt, glb)
            assert (await agent.expect(ResultAck)).status == "stored"
            assert coord.farm.reader.units == reads  # the options came from memory
            async with api_client(coord, key) as client:
                job = await _finished(client, job_id, 60)
                stl = (await client.get(f"/api/v1/jobs/{job_id}/download/stl")).content
        finally:
            await agent.close()
    assert faces > SPHERE * 0.9
    assert TARGET * 0.9 <= job["result"]["faces"] <= TARGET * (1 + FACE_TOLERANCE)
    assert job["result"]["watertight"] is True and _load(stl, "stl").is_watertight


async def test_mesh_options_read_for_a_lease_taken_without_them(tmp_path: Path) -> None:
    # A lease taken over without the options in memory (a replica's take-over) makes
    # the result read them: one prebuilt read, the model still shaped as asked.
    settings = make_settings(tmp_path / "data")
    key, token_file = await provision(settings, tmp_path)
    glb, _, _, _ = sphere_model(SPHERE, 7, None)
    async with running_coordinator(settings) as coord:
        agent = ScriptedAgent(coord.ws, token_file.read_text().strip(), versions=(1, 2))
        await agent.connect()
        try:
            async with api_client(coord, key) as client:
                job_id, assign = await _submit_mesh_job(client, agent, {"target_faces": TARGET})
                attempt = assign.jobs[0].attempt
                coord.farm._mesh.clear()  # as after a take-over that did not load them
                reads = coord.farm.reader.units
                await agent.upload(job_id, attempt, glb)
                assert (await agent.expect(ResultAck)).status == "stored"
                assert coord.farm.reader.units == reads + 1
                job = await _finished(client, job_id, 60)
        finally:
            await agent.close()
    assert TARGET * 0.9 <= job["result"]["faces"] <= TARGET * (1 + FACE_TOLERANCE)
