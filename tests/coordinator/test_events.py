"""Push for API clients over a real server: the job event stream (SSE) and ?wait= long-polls."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from coordinator.api.events import PROGRESS_MIN_S
from protocol import Assign, Progress, ResultAck, Welcome
from tests.support.coordinators import (
    RunningCoordinator,
    api_client,
    make_settings,
    provision,
    running_coordinator,
)
from tests.support.scripted_agent import ScriptedAgent


async def _events(client: httpx.AsyncClient, job_id: str, out: list[tuple[str, Any]]) -> int:
    """Read the job's event stream to its end; (event, data) pairs into ``out``."""
    async with client.stream("GET", f"/api/v1/jobs/{job_id}/events") as response:
        if response.status_code != 200:
            return response.status_code
        assert response.headers["content-type"].startswith("text/event-stream")
        event = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                out.append((event, json.loads(line[6:])))
        return 200


async def _submit(client: httpx.AsyncClient) -> str:
    answer = await client.post("/api/v1/jobs", json={"prompt": "a cube", "steps": 8})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["jobs"][0]["id"])


def _step(job_id: str, attempt: int, step: int, total: int) -> Progress:
    return Progress(job=job_id, attempt=attempt, stage="sampling", step=step, total=total)


@contextlib.asynccontextmanager
async def _with_agent(
    tmp_path: Path,
) -> AsyncIterator[tuple[RunningCoordinator, httpx.AsyncClient, ScriptedAgent]]:
    """A coordinator, an API client of its user and a connected scripted agent."""
    settings = make_settings(tmp_path)
    async with running_coordinator(settings) as coordinator:
        key, token_file = await provision(settings, tmp_path)
        async with api_client(coordinator, key) as client:
            agent = ScriptedAgent(coordinator.ws, token_file.read_text().strip())
            assert isinstance(await agent.connect(), Welcome)
            try:
                yield coordinator, client, agent
            finally:
                await agent.close()


async def test_events_stream_queued_progress_and_finished_with_downloads(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with running_coordinator(settings) as coordinator:
        key, token_file = await provision(settings, tmp_path)
        async with api_client(coordinator, key) as client:
            job_id = await _submit(client)  # no agent yet: it waits in line
            seen: list[tuple[str, Any]] = []
            reader = asyncio.create_task(_events(client, job_id, seen))
            agent = ScriptedAgent(coordinator.ws, token_file.read_text().strip())
            assert isinstance(await agent.connect(), Welcome)
            assign = await agent.expect(Assign)
            attempt = assign.jobs[0].attempt
            step = Progress(job=job_id, attempt=attempt, stage="sampling", step=3, total=8)
            await agent.send(step)
            await agent.upload(job_id, attempt)
            assert (await agent.expect(ResultAck)).status == "stored"
            async with asyncio.timeout(10):
                assert await reader == 200
            await agent.close()
    names = [name for name, _ in seen]
    assert names[0] in ("queued", "progress") and names[-1] == "finished"
    assert names.count("finished") == 1
    if names[0] == "queued":
        assert seen[0][1]["position"] == 1 and seen[0][1]["state"] == "queued"
    finished = seen[-1][1]
    assert finished["state"] == "succeeded" and finished["id"] == job_id
    assert finished["result"]["downloads"]["glb"] == f"/api/v1/jobs/{job_id}/download/glb"


async def test_events_wait_holds_the_answer_until_the_job_finished(tmp_path: Path) -> None:
    async with _with_agent(tmp_path) as (_coordinator, client, agent):
        job_id = await _submit(client)
        assign = await agent.expect(Assign)
        waiting = asyncio.create_task(client.get(f"/api/v1/jobs/{job_id}?wait=30"))
        attempt = assign.jobs[0].attempt
        step = Progress(job=job_id, attempt=attempt, stage="sampling", step=1, total=8)
        await agent.send(step)
        quick = await client.get(f"/api/v1/jobs/{job_id}")  # no wait: answers now
        assert quick.json()["state"] in ("assigned", "running")
        assert not waiting.done()
        await agent.upload(job_id, assign.jobs[0].attempt)
        async with asyncio.timeout(10):
            answer = await waiting
        assert answer.status_code == 200 and answer.json()["state"] == "succeeded"
        # A finished job answers at once, wait or not.
        again = await client.get(f"/api/v1/jobs/{job_id}?wait=30", timeout=5)
        assert again.json()["state"] == "succeeded"
        await agent.close()


async def test_events_refuse_bad_input_other_users_and_past_the_caps(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, streams_per_user=1)
    async with running_coordinator(settings) as coordinator:
        key, _ = await provision(settings, tmp_path)
        bob_key, _ = await provision(settings, tmp_path, username="bob")
        async with api_client(coordinator, key) as client:
            job_id = await _submit(client)
            for wait in ("61", "-1", "soon", "1e3", "9" * 50):
                answer = await client.get(f"/api/v1/jobs/{job_id}?wait={wait}")
                assert answer.status_code == 422, wait
                assert answer.json()["error"]["code"] == "validation_failed", wait
                assert answer.json()["error"]["details"][0]["loc"] == ["query", "wait"]
            assert (await client.get("/api/v1/jobs/nope/events")).status_code == 404
            async with api_client(coordinator, bob_key) as bob:
                assert (await bob.get(f"/api/v1/jobs/{job_id}/events")).status_code == 404
                answer = await bob.get(f"/api/v1/jobs/{job_id}?wait=5", timeout=3)
                assert answer.status_code == 404  # not theirs: no waiting either
            async with api_client(coordinator, "sfk.bad.key") as stranger:
                assert (await stranger.get(f"/api/v1/jobs/{job_id}/events")).status_code == 401
            # One stream per user here: the second is refused while the first is open.
            async with client.stream("GET", f"/api/v1/jobs/{job_id}/events") as first:
                assert first.status_code == 200
                second = await client.get(f"/api/v1/jobs/{job_id}/events")
                assert second.status_code == 429
                waited = await client.get(f"/api/v1/jobs/{job_id}?wait=5")
                assert waited.status_code == 429


async def test_events_finished_event_from_memory_equals_the_database_and_reads_nothing(
    tmp_path: Path,
) -> None:
    async with _with_agent(tmp_path) as (coordinator, client, agent):
        farm = coordinator.app.state.farm
        await client.get("/api/v1/jobs?limit=1")  # the key is cached from here on
        job_id = await _submit(client)
        attempt = (await agent.expect(Assign)).jobs[0].attempt
        seen: list[tuple[str, Any]] = []
        reads_before = farm.reader.units
        reader = asyncio.create_task(_events(client, job_id, seen))
        await agent.send(Progress(job=job_id, attempt=attempt, stage="sampling", step=1, total=8))
        await agent.upload(job_id, attempt)
        assert (await agent.expect(ResultAck)).status == "stored"
        async with asyncio.timeout(10):
            assert await reader == 200
        # Opened on a job live in memory, ended with the rows the result's commit
        # wrote: no read at either end; the download that follows reads nothing either.
        assert farm.reader.units == reads_before
        download = await client.get(f"/api/v1/jobs/{job_id}/download/glb")
        assert download.status_code == 200 and download.content[:4] == b"glTF"
        assert farm.reader.units == reads_before
        farm.forget_final(job_id)  # from here on GET reads the database
        from_db = (await client.get(f"/api/v1/jobs/{job_id}")).json()
        assert farm.reader.units == reads_before + 1
        await agent.close()
    assert seen[-1][0] == "finished"
    assert seen[-1][1] == from_db
    assert from_db["state"] == "succeeded" and from_db["result"]["size"] > 0


async def test_events_finished_row_dropped_by_a_visibility_change_and_a_deletion(
    tmp_path: Path,
) -> None:
    async with _with_agent(tmp_path) as (coordinator, client, agent):
        farm = coordinator.app.state.farm
        job_id = await _submit(client)
        attempt = (await agent.expect(Assign)).jobs[0].attempt
        await agent.upload(job_id, attempt)
        assert (await agent.expect(ResultAck)).status == "stored"
        assert farm.final_row(job_id) is not None
        made_public = await client.post(f"/api/v1/jobs/{job_id}/visibility", json={"public": True})
        assert made_public.status_code == 200, made_public.text
        assert farm.final_row(job_id) is None
        assert (await client.get(f"/api/v1/jobs/{job_id}")).json()["public"] is True
        assert (await client.delete(f"/api/v1/jobs/{job_id}")).status_code == 204
        assert (await client.get(f"/api/v1/jobs/{job_id}")).status_code == 404
        gone = await client.get(f"/api/v1/jobs/{job_id}/download/glb")
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "job_not_found"
        await agent.close()


async def test_events_progress_paced_and_the_end_sent_at_once(tmp_path: Path) -> None:
    async with _with_agent(tmp_path) as (_coordinator, client, agent):
        job_id = await _submit(client)
        attempt = (await agent.expect(Assign)).jobs[0].attempt
        await agent.send(_step(job_id, attempt, 1, 20))
        events: list[tuple[str, Any, float]] = []
        async with client.stream("GET", f"/api/v1/jobs/{job_id}/events") as stream:
            event = ""
            async with asyncio.timeout(10):
                async for line in stream.aiter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                        continue
                    if not line.startswith("data: "):
                        continue
                    events.append((event, json.loads(line[6:]), time.monotonic()))
                    if len(events) == 1:  # the next step at once: it waits its turn
                        await agent.send(_step(job_id, attempt, 2, 20))
                    elif len(events) == 2:  # the end is not held back
                        await agent.send(_step(job_id, attempt, 3, 20))
                        await agent.upload(job_id, attempt)
        assert (await agent.expect(ResultAck)).status == "stored"
        await agent.close()
    assert [e[1].get("step") for e in events[:2]] == [1, 2]
    # The server sent the second PROGRESS_MIN_S after the first (seen here a little later
    # or, with the first delayed on its way, a little sooner).
    assert events[1][2] - events[0][2] >= PROGRESS_MIN_S / 2
    assert events[-1][0] == "finished" and events[-1][1]["state"] == "succeeded"


async def test_events_stream_gives_its_slot_back_when_the_client_goes_away(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, streams_per_user=1)
    async with running_coordinator(settings) as coordinator:
        limiter = coordinator.app.state.streams
        released = asyncio.Event()
        release = limiter._release

        def noted(keys: Any) -> None:
            release(keys)
            released.set()

        limiter._release = noted
        key, _ = await provision(settings, tmp_path)
        async with api_client(coordinator, key) as client:
            job_id = await _submit(client)  # no agent: it stays queued
            async with client.stream("GET", f"/api/v1/jobs/{job_id}/events") as first:
                assert first.status_code == 200
                async for line in first.aiter_lines():
                    if line == "event: queued":
                        break
            # The client closed its connection mid-stream: the server notices at once.
            async with asyncio.timeout(5):
                await released.wait()
            again = await client.get(f"/api/v1/jobs/{job_id}?wait=1")
            assert again.status_code == 200 and again.json()["state"] == "queued"
