"""Image-to-3D end to end over real sockets: a picture goes in over the API, waits while
only a text agent is online (and says so), then a real agent process with the tiny image
model receives it in binary frames, verifies it and generates a valid GLB."""

from __future__ import annotations

import base64
import hashlib
import io
from pathlib import Path
from typing import Any

import pytest
import trimesh

from coordinator.cli.admin_cli import issue_token, write_secret_file
from tests.support.coordinators import (
    api_client,
    make_settings,
    provision,
    running_coordinator,
    start_agent,
    stop_agent,
    wait_for,
)
from tests.support.images import encoded

pytestmark = pytest.mark.slow


async def test_image_job_runs_only_on_an_image_agent(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    key, text_token = await provision(settings, tmp_path)
    image_agent_id, token = await issue_token(settings, "alice", "alice's image agent", True)
    image_token = tmp_path / "image-agent-token"
    write_secret_file(image_token, token)
    picture = encoded("JPEG", (320, 240))
    async with running_coordinator(settings) as coord:
        text_agent = start_agent(coord.ws, text_token, tmp_path / "spool-text")
        image_agent = None
        try:
            async with api_client(coord, key) as client:
                body = {"image": base64.b64encode(picture).decode(), "steps": 4, "seed": 3}
                response = await client.post("/api/v1/jobs", json=body)
                assert response.status_code == 201, response.text
                job_id = response.json()["jobs"][0]["id"]
                text = await client.post("/api/v1/jobs", json={"prompt": "a cup", "steps": 2})
                text_id = text.json()["jobs"][0]["id"]

                async def done(which: str) -> dict[str, Any]:
                    job: dict[str, Any] = (await client.get(f"/api/v1/jobs/{which}")).json()
                    return job

                async def text_done() -> bool:
                    assert text_agent.poll() is None, "the text agent died"
                    return bool((await done(text_id))["state"] == "succeeded")

                # The text agent is up and working: it ran the text job...
                await wait_for(text_done, 180, "the text agent to run the text job")
                # ...and the image job was never offered to it: still queued, no attempt,
                # and the API says no agent that can run it is online.
                waiting = await done(job_id)
                assert waiting["state"] == "queued" and waiting["attempt"] == 0, waiting
                assert waiting["progress"]["agents_online"] == 0, waiting
                assert waiting["kind"] == "image" and waiting["prompt"] == ""
                kept = waiting["image"]
                stored = (await client.get(kept["url"])).content
                assert hashlib.sha256(stored).hexdigest() == kept["sha256"]
                assert stored[:8] == b"\x89PNG\r\n\x1a\n" and (kept["width"], kept["height"]) == (
                    320,
                    240,
                )

                image_agent = start_agent(
                    coord.ws, image_token, tmp_path / "spool-image", model="tiny-img2img"
                )
                job: dict[str, Any] = {}

                async def image_done() -> bool:
                    nonlocal job
                    assert image_agent is not None and image_agent.poll() is None
                    job = await done(job_id)
                    return job["state"] in {"succeeded", "failed", "cancelled"}

                await wait_for(image_done, 180, "the image job to finish")
                assert job["state"] == "succeeded", job
                assert job["attempt"] == 1  # first offer, to the image agent
                assert job["result"]["agent_id"] == image_agent_id
                glb = (await client.get(f"/api/v1/jobs/{job_id}/download/glb")).content
        finally:
            codes = [await stop_agent(text_agent)]
            if image_agent is not None:
                codes.append(await stop_agent(image_agent))
        assert codes == [0] * len(codes)
    assert hashlib.sha256(glb).hexdigest() == job["result"]["sha256"]
    mesh = trimesh.load(io.BytesIO(glb), file_type="glb", force="mesh")
    assert len(mesh.faces) == job["result"]["faces"] > 0
