"""A prompt goes in over HTTP; a real agent process generates it over a real WebSocket."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pygltflib
import pytest
import trimesh

from tests.support.coordinators import (
    api_client,
    make_settings,
    provision,
    running_coordinator,
    start_agent,
    stop_agent,
    wait_for,
)

pytestmark = pytest.mark.slow


async def test_prompt_to_glb_through_real_agent(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    key, token_file = await provision(settings, tmp_path)
    async with running_coordinator(settings) as coord:
        agent = start_agent(coord.ws, token_file, tmp_path / "spool")
        try:
            async with api_client(coord, key) as client:
                response = await client.post(
                    "/api/v1/jobs", json={"prompt": "a red chair", "steps": 4, "seed": 7}
                )
                assert response.status_code == 201, response.text
                job_id = response.json()["jobs"][0]["id"]
                job: dict[str, object] = {}

                async def finished() -> bool:
                    nonlocal job
                    job = (await client.get(f"/api/v1/jobs/{job_id}")).json()
                    assert agent.poll() is None, "the agent process died"
                    return job["state"] in {"succeeded", "failed", "cancelled"}

                await wait_for(finished, 180, "the job to finish")
                assert job["state"] == "succeeded", job
                result = job["result"]
                assert isinstance(result, dict)
                glb = (await client.get(f"/api/v1/jobs/{job_id}/download/glb")).content
        finally:
            exit_code = await stop_agent(agent)
        assert exit_code == 0
    assert hashlib.sha256(glb).hexdigest() == result["sha256"]
    assert len(glb) == result["size"]
    gltf = pygltflib.GLTF2.load_from_bytes(glb)
    assert (
        gltf.meshes
        and "COLOR_0" in json.loads(gltf.to_json())["meshes"][0]["primitives"][0]["attributes"]
    )
    mesh = trimesh.load(io.BytesIO(glb), file_type="glb", force="mesh")
    assert len(mesh.vertices) == result["vertices"] > 0
    assert len(mesh.faces) == result["faces"] > 0
