"""Hostile frames over a real socket (uvicorn + websockets), then a real agent still works."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from protocol import CloseCode
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


HUGE_RESULT = {"type": "result", "job": "x", "attempt": 1, "stream": 1,
               "artifacts": [{"kind": "glb", "size": 10**12, "sha256": "0" * 64}]}  # fmt: skip


def _hello(token: str) -> str:
    return json.dumps({"type": "hello", "token": token, "versions": [1], "agent_version": "x",
                       "capabilities": {}})  # fmt: skip


async def test_agentlink_socket_survives_hostile_peers_then_serves_a_real_agent(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path / "data", max_frame_bytes=64 * 1024, chunk_bytes=16 * 1024)
    key, token_file = await provision(settings, tmp_path, admin=True)
    token = token_file.read_text().strip()
    rng = random.Random(7)
    hostile = [
        [b"\x00" * (64 * 1024 + 1)],  # over max_frame_bytes
        [_hello(token), rng.randbytes(200)],  # binary without a result header
        [_hello(token), "{" * 5000],  # malformed JSON
        [_hello(token), json.dumps(HUGE_RESULT)],  # announced upload over max_result_bytes
        [_hello("sfa.nope.nope")],
    ]
    async with running_coordinator(settings) as coord:
        for frames in hostile:
            async with connect(coord.ws, max_size=None) as ws:
                for frame in frames:
                    await ws.send(frame)
                with pytest.raises(ConnectionClosed) as closed:
                    async with asyncio.timeout(10):
                        while True:
                            await ws.recv()
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code in {
                CloseCode.MESSAGE_TOO_BIG,
                CloseCode.PROTOCOL_ERROR,
                CloseCode.BAD_TOKEN,
            }, closed.value.rcvd
        agent = start_agent(coord.ws, token_file, tmp_path / "spool", model="instant")
        try:
            async with api_client(coord, key) as client:
                response = await client.post("/api/v1/jobs", json={"prompt": "still up"})
                job_id = response.json()["jobs"][0]["id"]

                async def succeeded() -> bool:
                    job = (await client.get(f"/api/v1/jobs/{job_id}")).json()
                    return job["state"] == "succeeded"

                await wait_for(succeeded, 30, "a normal agent to complete a job")
        finally:
            assert await stop_agent(agent) == 0
