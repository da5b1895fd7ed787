"""Live-update streams (SSE): caps per session, user, address and in all, a maximum
lifetime, and access re-checked while a stream is open."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import IO

import httpx
import pytest

from coordinator.cli.admin_cli import create_api_key, create_user
from coordinator.settings import Settings, load_settings
from coordinator.web.streams import StreamCaps, StreamLimiter, StreamLimitError
from tests.support.coordinators import PASSWORD, ROOT, make_settings, running_coordinator, wait_for
from tests.support.procs import free_port
from tests.support.rawhttp import RawResponse, get, login_cookie

FD_LIMIT = 256


def test_streams_limiter_caps_session_user_address_and_total() -> None:
    limiter = StreamLimiter(StreamCaps(per_session=2, per_user=3, per_address=4, total=5))
    held = [limiter.acquire("s1", 1, "10.0.0.1"), limiter.acquire("s1", 1, "10.0.0.1")]
    with pytest.raises(StreamLimitError, match="in this browser: 2 live-update streams"):
        limiter.acquire("s1", 1, "10.0.0.1")
    held.append(limiter.acquire("s2", 1, "10.0.0.1"))  # another session of the same user
    with pytest.raises(StreamLimitError, match="for your account: 3"):
        limiter.acquire("s3", 1, "10.0.0.1")
    held.append(limiter.acquire(None, None, "10.0.0.1"))  # a visitor, same address
    with pytest.raises(StreamLimitError, match="from your address: 4"):
        limiter.acquire(None, 2, "10.0.0.1")
    held.append(limiter.acquire(None, None, "10.0.0.2"))
    with pytest.raises(StreamLimitError, match="server has too many"):
        limiter.acquire(None, None, "10.0.0.3")
    assert limiter.open() == 5 and limiter.open("user:1") == 3
    held[0].release()
    held[0].release()  # twice is once
    assert limiter.open() == 4 and limiter.open("session:s1") == 1
    limiter.acquire("s1", 1, "10.0.0.1")  # the freed place is usable again
    for slot in held:
        slot.release()
    assert limiter.open() == 1


def test_streams_total_cap_is_derived_from_the_descriptor_limit(tmp_path: Path) -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    caps = StreamCaps.from_settings(make_settings(tmp_path))
    assert caps.total == max(8, soft // 4)
    assert StreamCaps.from_settings(make_settings(tmp_path, streams_max=7)).total == 7


def _low_nofile() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


def _spawn_coordinator(data: Path, port: int, log: IO[bytes]) -> subprocess.Popen[bytes]:
    """``shapefarm coordinator`` as its own process, with only FD_LIMIT descriptors."""
    env = {**os.environ, "SHAPEFARM_DATA_DIR": str(data)}
    argv = [sys.executable, "-m", "coordinator.cli", "coordinator", "--port", str(port),
            "--log-level", "error"]  # fmt: skip
    return subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_low_nofile
    )


async def _attempt(port: int, path: str, cookie: str, held: list[RawResponse]) -> str:
    """One stream attempt: "stream" (kept open), "429" (and closed by the server), or
    what went wrong."""
    # Bounds generous enough for a loaded 2-core machine; a refusal that keeps the
    # socket open still fails (after 10 s).
    try:
        response = await get(port, path, cookie, within=15.0)
    except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
        return f"no answer ({type(exc).__name__})"
    if response.status == 200:
        held.append(response)
        return "stream"
    try:
        body = await response.read_to_eof(10.0)  # the refusal must not keep the socket
    except TimeoutError:
        await response.close()
        return f"{response.status} left open"
    await response.close()
    if response.status == 429 and "connection: close" in response.head.lower():
        assert "live-update streams at most" in body, body
        return "429"
    return f"{response.status}"


@pytest.mark.slow
async def test_streams_flood_by_one_user_leaves_other_users_working(tmp_path: Path) -> None:
    """1000 stream attempts by one user, 64 at a time, against a coordinator process with
    256 descriptors: the user gets its 8 streams and 429s, everybody else gets pages."""
    data = tmp_path / "data"
    settings = make_settings(data)
    for name in ("flood", "bystander"):
        await create_user(settings, name, PASSWORD, None, is_admin=False)
    key = await create_api_key(settings, "flood", "tests")
    port = free_port()
    log = (tmp_path / "coordinator.log").open("wb")
    proc = _spawn_coordinator(data, port, log)
    held: list[RawResponse] = []
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=5) as probe:

            async def healthy() -> bool:
                assert proc.poll() is None, (tmp_path / "coordinator.log").read_text()
                with contextlib.suppress(httpx.TransportError):
                    return (await probe.get("/healthz")).status_code == 200
                return False

            await wait_for(healthy, 30, "the coordinator to answer /healthz", interval=0.05)
            created = await probe.post(
                "/api/v1/jobs", json={"prompt": "a cup"}, headers={"Authorization": f"Bearer {key}"}
            )
            assert created.status_code == 201, created.text
        job_id = created.json()["jobs"][0]["id"]
        # Three logins of the flooding user (three browsers), one of the bystander.
        cookies = [await login_cookie(base, "flood") for _ in range(3)]
        paths = [f"/jobs/{job_id}/events", "/history/events"]
        # A new connection for every request, as new visitors make: the server must
        # still be able to accept them.
        bystander = httpx.AsyncClient(
            base_url=base,
            timeout=20,
            cookies={"shapefarm_session": await login_cookie(base, "bystander")},
            headers={"Connection": "close"},
        )
        gate = asyncio.Semaphore(64)  # connections being opened or answered at once
        outcomes: Counter[str] = Counter()

        async def one(i: int) -> None:
            async with gate:
                outcomes[await _attempt(port, paths[i % 2], cookies[i % 3], held)] += 1

        flood = asyncio.gather(*(one(i) for i in range(1000)))
        bystander_failures: list[str] = []
        async with bystander:
            while not flood.done():
                for path in ("/", "/history", "/healthz"):
                    try:
                        answer = await bystander.get(path)
                        if answer.status_code != 200 or (
                            path != "/healthz" and "bystander" not in answer.text
                        ):
                            bystander_failures.append(f"{path}: {answer.status_code}")
                    except httpx.TransportError as exc:
                        bystander_failures.append(f"{path}: {type(exc).__name__}")
                await asyncio.wait([flood], timeout=0.2)
            await flood
            # While the flooder still holds its streams, a page load still works.
            assert (await bystander.get("/")).status_code == 200
            assert (await bystander.get("/healthz")).status_code == 200
        assert not bystander_failures, (bystander_failures[:10], outcomes)
        assert outcomes["stream"] == 8, outcomes  # streams_per_user, over three sessions
        assert outcomes["429"] == 1000 - 8, outcomes
    finally:
        for response in held:
            await response.close()
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


async def _owner_and_viewer(data: Path, **environ: str) -> tuple[Settings, str, str]:
    settings = load_settings(
        {"data_dir": data, "heartbeat_s": 0.5, "lease_s": 5.0, "secret_key": None},
        environ=environ,
    )
    for name in ("alice", "bob"):
        await create_user(settings, name, PASSWORD, None, is_admin=False)
    return settings, await create_api_key(settings, "alice", "tests"), "bob"


async def test_streams_job_stream_ends_after_its_max_lifetime(tmp_path: Path) -> None:
    # The lifetime comes from the environment, as in production (SHAPEFARM_STREAM_MAX_S).
    settings, key, _ = await _owner_and_viewer(tmp_path, SHAPEFARM_STREAM_MAX_S="0.5")
    async with running_coordinator(settings) as coordinator:
        auth = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=coordinator.http, headers=auth) as api:
            job = (await api.post("/api/v1/jobs", json={"prompt": "a cup"})).json()["jobs"][0]
        cookie = await login_cookie(coordinator.http, "alice")
        for path in (f"/jobs/{job['id']}/events", "/history/events"):
            started = time.monotonic()
            stream = await get(coordinator.port, path, cookie)
            assert stream.status == 200
            rest = await stream.read_to_end(8.0)  # queued for ever: only the lifetime ends it
            assert time.monotonic() - started < 8.0
            await stream.close()
            if "jobs" in path:
                assert "event: status" in rest and "event: done" not in rest  # browser reconnects
        assert coordinator.app.state.streams.open() == 0


async def test_streams_job_made_private_stops_a_viewers_stream(tmp_path: Path) -> None:
    settings, key, viewer = await _owner_and_viewer(tmp_path)
    prompt = "a very private teapot"
    async with running_coordinator(settings) as coordinator:
        auth = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=coordinator.http, headers=auth) as api:
            job = (await api.post("/api/v1/jobs", json={"prompt": prompt})).json()["jobs"][0]
            made = await api.post(f"/api/v1/jobs/{job['id']}/visibility", json={"public": True})
            assert made.status_code == 200
            stream = await get(
                coordinator.port,
                f"/jobs/{job['id']}/events",
                await login_cookie(coordinator.http, viewer),
            )
            assert stream.status == 200
            assert "event: status" in await stream.read_event(5.0)
            hidden = await api.post(f"/api/v1/jobs/{job['id']}/visibility", json={"public": False})
            assert hidden.status_code == 200
        # The job keeps changing (progress from its agent, here published by hand).
        for _ in range(3):
            coordinator.farm.publish(job["id"], "progress")
        try:
            rest = await stream.read_to_end(5.0)
        finally:
            await stream.close()
        assert "event: status" not in rest and prompt not in rest
        assert "event: done\ndata: gone" in rest  # the page's sse-close="done" stops it
