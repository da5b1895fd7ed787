"""Every size and count limit the coordinator enforces, each with its clear refusal."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from coordinator.services import job_images
from protocol import Artifact, CloseCode, Error, Result, ResultAck
from protocol.limits import MAX_GUIDANCE, MAX_PROMPT_CHARS, MAX_STEPS, MAX_VARIANTS
from tests.support.agentws import Closed, farm, valid_glb
from tests.support.coordinators import make_settings, provision, running_coordinator

LIMITS = {"max_result_bytes": 4096, "max_body_bytes": 2048, "lease_s": 600.0}


def _api(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_limits_prompt_length_is_refused_over_the_maximum(tmp_path: Path) -> None:
    with farm(tmp_path, agents=1) as f:
        ok = f.client.post(
            "/api/v1/jobs", json={"prompt": "x" * MAX_PROMPT_CHARS}, headers=_api(f.api_key)
        )
        assert ok.status_code == 201, ok.text
        long = f.client.post(
            "/api/v1/jobs", json={"prompt": "x" * (MAX_PROMPT_CHARS + 1)}, headers=_api(f.api_key)
        )
        assert long.status_code == 422
        assert f"length <= {MAX_PROMPT_CHARS}" in long.json()["error"]["message"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"steps": MAX_STEPS + 1}, f"<= {MAX_STEPS} (at body.steps)"),
        ({"guidance": MAX_GUIDANCE + 0.5}, f"<= {MAX_GUIDANCE:g}"),
        ({"variants": MAX_VARIANTS + 1}, f"<= {MAX_VARIANTS} (at body.variants)"),
        ({"seed": 2**32}, "<= 4294967295"),
        ({"seed": 1e300}, "body.seed"),
        ({"steps": "lots"}, "body.steps"),
    ],
)
def test_limits_generation_settings_beyond_the_protocol_limits_are_refused(
    tmp_path: Path, fields: dict[str, object], message: str
) -> None:
    """The API admits only what agents run (protocol.limits), whatever the caller's tier."""
    with farm(tmp_path, agents=1) as f:
        refused = f.client.post(
            "/api/v1/jobs", json={"prompt": "a chair", **fields}, headers=_api(f.api_key)
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["code"] == "validation_failed"
        assert message in refused.json()["error"]["message"]


def test_limits_infinite_seed_is_a_clear_refusal_not_a_server_error(tmp_path: Path) -> None:
    with farm(tmp_path, agents=1) as f:
        refused = f.client.post(
            "/api/v1/jobs",
            content=b'{"prompt": "a chair", "seed": Infinity}',
            headers={**_api(f.api_key), "Content-Type": "application/json"},
        )
        assert refused.status_code == 400, refused.text  # Infinity is not JSON
        assert refused.json()["error"]["code"] == "invalid_json"


def test_limits_request_body_over_max_body_bytes_gets_413(tmp_path: Path) -> None:
    with farm(tmp_path, agents=1, **LIMITS) as f:
        job = f.client.post("/api/v1/jobs", json={"prompt": "a chair"}, headers=_api(f.api_key))
        assert job.status_code == 201
        route = f"/api/v1/jobs/{job.json()['jobs'][0]['id']}/visibility"
        body = json.dumps({"public": True, "pad": "x" * 4096}).encode()
        declared = f.client.post(route, content=body, headers=_api(f.api_key))
        assert declared.status_code == 413
        assert declared.json()["error"]["code"] == "body_too_large"

        def chunks(data: bytes, size: int) -> Iterator[bytes]:  # no Content-Length
            for i in range(0, len(data), size):
                yield data[i : i + size]

        streamed = f.client.post(route, content=chunks(body, 512), headers=_api(f.api_key))
        assert streamed.status_code == 413
        assert streamed.json()["error"]["code"] == "body_too_large"
        # Submissions may carry an image: they have their own limit, counted the same way.
        pad = "x" * (job_images.MAX_SUBMIT_BODY_BYTES + 1)
        huge = json.dumps({"prompt": "a chair", "pad": pad}).encode()
        declared = f.client.post("/api/v1/jobs", content=huge, headers=_api(f.api_key))
        assert declared.status_code == 413
        assert declared.json()["error"]["code"] == "body_too_large"
        streamed = f.client.post(
            "/api/v1/jobs", content=chunks(huge, 65536), headers=_api(f.api_key)
        )
        assert streamed.status_code == 413
        small = f.client.post("/api/v1/jobs", json={"prompt": "a chair"}, headers=_api(f.api_key))
        assert small.status_code == 201


def test_limits_queued_jobs_per_user_follow_the_tier(tmp_path: Path) -> None:
    # No agent is connected, so every job stays queued; the free tier allows 5.
    with farm(tmp_path, agents=1) as f:
        for _ in range(5):
            assert f.client.post("/api/v1/jobs", json={"prompt": "a cup", "steps": 8},
                                 headers=_api(f.api_key)).status_code == 201  # fmt: skip
        refused = f.client.post("/api/v1/jobs", json={"prompt": "a cup", "steps": 8},
                                headers=_api(f.api_key))  # fmt: skip
        assert refused.status_code == 429
        assert "allows 5 queued at once" in refused.json()["error"]["message"]
        too_many_variants = f.client.post(
            "/api/v1/jobs", json={"prompt": "a cup", "variants": 3}, headers=_api(f.api_key)
        )
        assert "at most 2 variants" in too_many_variants.json()["error"]["message"]


@pytest.mark.parametrize(("size", "refused"), [(4096, False), (4097, True)])
def test_limits_result_size_is_checked_against_max_result_bytes(
    tmp_path: Path, size: int, refused: bool
) -> None:
    with farm(tmp_path, agents=1, **LIMITS) as f, f.connect(f.tokens[0]) as agent:
        artifact = Artifact(kind="glb", size=size, sha256="0" * 64)
        agent.send(Result(job="j1", attempt=1, stream=1, artifacts=(artifact,)))
        if refused:
            outcome = agent.receive_until(ResultAck)
            assert isinstance(outcome, Closed) and outcome.code == CloseCode.PROTOCOL_ERROR
            error = agent.seen[-1]
            assert isinstance(error, Error) and error.code == "too_big"
            assert "exceeds the limit of 4096" in error.message
        else:  # within the limit the upload goes on; a wrong sha256 is the next check
            agent.ws.send_bytes(b"SFC\x01" + (1).to_bytes(4, "big") + bytes(8) + bytes(size))
            outcome = agent.receive_until(ResultAck)
            assert isinstance(outcome, Closed)
            assert [m.code for m in agent.seen if isinstance(m, Error)] == ["bad_checksum"]


def test_limits_a_valid_glb_over_max_result_bytes_is_refused_by_the_glb_check() -> None:
    from coordinator.meshes.convert import InvalidModelError, inspect_glb

    glb = valid_glb()
    assert inspect_glb(glb, len(glb)).faces == 4
    with pytest.raises(InvalidModelError, match=f"over the {len(glb) - 1}-byte limit"):
        inspect_glb(glb, len(glb) - 1)


async def test_limits_websocket_frame_over_max_frame_bytes_closes_1009(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", max_frame_bytes=64 * 1024, chunk_bytes=16 * 1024)
    await provision(settings, tmp_path)
    async with running_coordinator(settings) as coord:
        async with connect(coord.ws, max_size=None) as ws:
            await ws.send(b"\x00" * (64 * 1024 + 1))
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        # A frame within the limit reaches the protocol layer and gets its error.
        async with connect(coord.ws) as ws:
            await ws.send(b"\x00" * 1024)
            error = json.loads(await ws.recv())
            assert error["type"] == "error" and error["fatal"] is True
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == CloseCode.PROTOCOL_ERROR
        assert len(coord.farm.agents) == 0
