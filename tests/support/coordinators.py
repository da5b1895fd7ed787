"""Helpers for tests that run real servers and agents on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from coordinator.app import create_app
from coordinator.cli.admin_cli import create_api_key, create_user, issue_token, write_secret_file
from coordinator.cli.serve import uvicorn_config
from coordinator.settings import Settings, load_settings
from tests.support.agentfork import ForkedAgent, forked_agent

ROOT = Path(__file__).resolve().parents[2]
# An agent started by start_agent: its own process, or forked from the zygote.
AgentProcess = subprocess.Popen[bytes] | ForkedAgent
PASSWORD = "a long test password 1"

# A tiers file whose free plan allows two models a day (quota and inheritance tests).
TWO_A_DAY = """
[tiers.free]
rank = 0
weight = 1.0
daily_quota = 2
max_concurrent = 1
max_steps = 64
max_variants = 4
max_guidance = 15.0
max_queued = 100
"""


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "heartbeat_s": 0.5,
        "lease_s": 5.0,
        "reconnect_grace_s": 1.0,
        "secret_key": None,
    }
    values.update(overrides)
    return load_settings(values, environ={})


@dataclass
class RunningCoordinator:
    settings: Settings
    server: uvicorn.Server
    port: int
    app: Any

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/agent/ws"

    @property
    def farm(self) -> Any:
        return self.app.state.farm


@contextlib.asynccontextmanager
async def running_coordinator(
    settings: Settings, port: int = 0
) -> AsyncIterator[RunningCoordinator]:
    """A real uvicorn server on 127.0.0.1 in this event loop, stopped on exit."""
    app = create_app(settings)
    config = uvicorn_config(app, settings, "warning", host="127.0.0.1", port=port, lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(30):
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("coordinator did not start")
            await asyncio.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield RunningCoordinator(settings, server, bound, app)
    finally:
        server.should_exit = True
        async with asyncio.timeout(30):
            await task


async def provision(
    settings: Settings,
    tmp: Path,
    username: str = "alice",
    admin: bool = False,
    approved: bool = True,
) -> tuple[str, Path]:
    """A user with an API key, and an agent token file owned by that user."""
    await create_user(settings, username, PASSWORD, None, is_admin=admin)
    key = await create_api_key(settings, username, "tests")
    _, token = await issue_token(settings, username, f"{username}'s agent", approved)
    token_file = tmp / f"{username}-agent-token"
    write_secret_file(token_file, token)
    return key, token_file


def start_agent(
    url: str, token_file: Path, spool: Path, *extra: str, model: str = "tiny"
) -> AgentProcess:
    """``python -m agent`` with the test's arguments. Agents of the tiny Shap-E models
    are forked from a parent that has imported torch and diffusers already
    (tests/support/agentfork.py: ~7 s of CPU less per agent); the others start as
    processes of their own."""
    argv = [
        "--url", url, "--token-file", str(token_file), "--model", model,
        "--device", "cpu", "--spool-dir", str(spool), *extra,
    ]  # fmt: skip
    if model.startswith("tiny"):
        return forked_agent(argv)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "agent", *argv], env=env, cwd=ROOT, start_new_session=True
    )


def stop_process(proc: AgentProcess, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


async def stop_agent(proc: AgentProcess, sig: int = signal.SIGTERM, wait_s: float = 20) -> int:
    """:func:`stop_process` without blocking this event loop.

    An agent stopped with SIGTERM closes its WebSocket and waits for the coordinator's
    closing reply (up to websockets' 10 s close timeout). A coordinator running in this
    event loop can only answer while the loop runs, so a blocking wait here made every
    such stop take 10 s.
    """
    return await asyncio.to_thread(stop_process, proc, sig, wait_s)


async def wait_for(
    predicate: Callable[[], Awaitable[bool]],
    within: float,
    what: str,
    interval: float = 0.1,
) -> None:
    """Poll an out-of-process condition until true, for at most ``within`` seconds."""
    deadline = time.monotonic() + within
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(interval)


def api_client(coordinator: RunningCoordinator, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=coordinator.http, timeout=30, headers={"Authorization": f"Bearer {key}"}
    )


CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


@contextlib.asynccontextmanager
async def logged_in(
    coordinator: RunningCoordinator, username: str, password: str = PASSWORD
) -> AsyncIterator[httpx.AsyncClient]:
    """A client logged in through the login form, as a person would, cookies kept."""
    async with httpx.AsyncClient(base_url=coordinator.http, timeout=30) as client:
        token = CSRF_FIELD.search((await client.get("/login")).text)
        assert token
        response = await client.post(
            "/login",
            data={"csrf_token": token.group(1), "username": username, "password": password},
        )
        assert response.status_code == 303, response.text
        yield client
