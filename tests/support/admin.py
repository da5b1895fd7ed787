"""Admin-console test helpers: an agent socket through the TestClient, enrollment,
submissions, audit rows and the admin login."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import select
from starlette.testclient import TestClient, WebSocketTestSession

from coordinator.store import models
from protocol import (
    SUPPORTED_VERSIONS,
    Capabilities,
    Hello,
    Welcome,
    decode_from_coordinator,
    encode,
)
from tests.support.ui import farm, make_admin, run
from tests.support.webclient import csrf, register

TOKEN = re.compile(r'id="agent-token"[^>]*>([^<]+)<')


def enroll(client: TestClient, name: str = "box") -> tuple[str, str]:
    """Enroll an agent as the logged-in user; returns (agent id, token)."""
    response = client.post(
        "/contribute/agents", data={"csrf_token": csrf(client, "/contribute"), "name": name}
    )
    assert response.status_code == 200, response.text
    match = TOKEN.search(response.text)
    assert match, "no token on the enrollment page"
    token = html.unescape(match.group(1))
    return token.split(".")[1], token


def wait_until(client: TestClient, predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Wait (in the app's loop) for in-memory farm state the socket thread changes."""

    async def poll() -> None:
        async with asyncio.timeout(within):
            while True:  # the state changes in the socket's task: poll, bounded
                if predicate():
                    return
                await asyncio.sleep(0.01)

    run(client, poll)


def wait_detached(client: TestClient, agent_id: str, since: float, within: float = 5.0) -> None:
    """Wait until the endpoint recorded the agent's disconnect (its last database write)."""

    async def poll() -> None:
        async with asyncio.timeout(within):
            while True:
                async with farm(client).sessions() as db:
                    agent = await db.get(models.Agent, agent_id)
                    if agent is not None and (agent.last_seen_at or 0.0) >= since:
                        return
                await asyncio.sleep(0.01)

    run(client, poll)


def hello(token: str, gpu: str = "RTX Test", vram_mb: int = 8192) -> str:
    caps = Capabilities(device="cuda", gpu_name=gpu, vram_mb=vram_mb)
    return encode(
        Hello(token=token, versions=SUPPORTED_VERSIONS, agent_version="t-1", capabilities=caps)
    )


@contextmanager
def agent_socket(
    client: TestClient, token: str, gpu: str = "RTX Test", vram_mb: int = 8192
) -> Iterator[tuple[WebSocketTestSession, Welcome]]:
    """A scripted agent: hello, welcome, then whatever the test reads."""
    with client.websocket_connect("/agent/ws") as ws:
        ws.send_text(hello(token, gpu, vram_mb))
        welcome = decode_from_coordinator(ws.receive_text())
        assert isinstance(welcome, Welcome), welcome
        agent_id = token.split(".")[1]
        wait_until(client, lambda: agent_id in farm(client).agents)
        try:
            yield ws, welcome
        finally:
            # Let the endpoint finish its clean-up before the test client cancels it:
            # a clean-up cancelled halfway leaves a database connection behind.
            closed_at = farm(client).clock()
            ws.close(1000)
            wait_detached(client, agent_id, closed_at)


def next_message(ws: WebSocketTestSession) -> object:
    """The next coordinator message, skipping nothing (heartbeats only go agent → coordinator)."""
    return decode_from_coordinator(ws.receive_text())


def submit(client: TestClient, prompt: str = "a lamp", steps: int = 8) -> str:
    response = client.post(
        "/jobs", data={"csrf_token": csrf(client, "/"), "prompt": prompt, "steps": str(steps)}
    )
    assert response.status_code == 303, response.text
    return str(response.headers["location"]).rsplit("/", 1)[1]


def job_row(client: TestClient, job_id: str) -> models.Job:
    async def load() -> models.Job:
        async with farm(client).sessions() as db:
            job = await db.get(models.Job, job_id)
            assert job is not None
            return job

    return run(client, load)


def audit_actions(client: TestClient) -> list[str]:
    async def load() -> list[str]:
        async with farm(client).sessions() as db:
            rows = await db.scalars(select(models.AuditEntry.action).order_by(models.AuditEntry.id))
            return list(rows)

    return run(client, load)


def post(client: TestClient, path: str, **data: str) -> int:
    response = client.post(path, data={"csrf_token": csrf(client, "/"), **data})
    return response.status_code


def as_admin(client: TestClient, name: str = "root") -> None:
    register(client, name)
    make_admin(client, name)


# -- authorisation ------------------------------------------------------------
