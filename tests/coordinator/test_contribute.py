"""The volunteer page: enrollment with a token shown once, the agent list, revoke, credit."""

from __future__ import annotations

import hashlib
import html
from pathlib import Path

import pytest
from starlette.websockets import WebSocketDisconnect

from coordinator.store import models
from protocol import Assign, CloseCode, Error, Heartbeat, decode_from_coordinator, encode
from scheduler.lifecycle import JobState
from tests.support.admin import (
    agent_socket,
    as_admin,
    audit_actions,
    enroll,
    hello,
    job_row,
    next_message,
    post,
    submit,
)
from tests.support.coordinators import make_settings, running_coordinator
from tests.support.sockclient import Browser
from tests.support.ui import farm, run, user_id
from tests.support.webclient import app_client, csrf, logout, register

pytestmark = pytest.mark.timeout(15)


def _agent(client: object, agent_id: str) -> models.Agent:
    async def load() -> models.Agent:
        async with farm(client).sessions() as db:  # type: ignore[arg-type]
            agent = await db.get(models.Agent, agent_id)
            assert agent is not None
            return agent

    return run(client, load)  # type: ignore[arg-type]


def test_contribute_page_needs_login(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        for method, path in (("GET", "/contribute"), ("GET", "/contribute/agents")):
            response = client.request(method, path)
            assert response.status_code == 303
            assert response.headers["location"].startswith("/login?next=")


def test_contribute_enroll_shows_token_once_with_commands(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        page = client.get("/contribute").text
        assert "What the agent sees" in page and "prompts it is given" in page
        response = client.post(
            "/contribute/agents", data={"csrf_token": csrf(client, "/contribute"), "name": "rig"}
        )
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-store"
        text = html.unescape(response.text)
        assert 'pip install "shapefarm[agent]" -c constraints.txt' in text
        assert 'pip install -e ".[agent]"' in text
        assert (
            "shapefarm-agent --url wss://COORDINATOR-ADDRESS/agent/ws "
            "--token-file ~/.shapefarm-agent-token" in text
        )
        assert "SHAPEFARM_PUBLIC_URL" in text  # and the page says why
        agent_id, token = enroll(client, "second")
        prefix, token_agent, secret = token.split(".")
        assert (prefix, token_agent) == ("sfa", agent_id) and len(secret) >= 32
        stored = _agent(client, agent_id)
        assert stored.token_hash == hashlib.sha256(secret.encode()).hexdigest()
        assert not stored.approved  # a volunteer's agent waits for an admin
        later = client.get("/contribute").text
        assert secret not in later and "second" in later and "pending" in later
        assert audit_actions(client).count("agent.enroll") == 2


def test_contribute_agent_url_comes_from_public_url(tmp_path: Path) -> None:
    with app_client(tmp_path, public_url="https://farm.example.org/") as client:
        register(client, "alice")
        response = client.post(
            "/contribute/agents", data={"csrf_token": csrf(client, "/contribute"), "name": "rig"}
        )
        assert "--url wss://farm.example.org/agent/ws" in response.text


async def test_contribute_install_command_never_reflects_the_host_header(tmp_path: Path) -> None:
    # A real server: the Host header is whatever the requester (or a poisoned
    # cache, or a link that sends a victim there) put in it.
    evil = {"Host": "evil.example"}
    for public_url, expected in (
        ("", "--url wss://COORDINATOR-ADDRESS/agent/ws"),
        ("https://farm.example.org", "--url wss://farm.example.org/agent/ws"),
    ):
        settings = make_settings(
            tmp_path / ((public_url and "public") or "none"), public_url=public_url
        )
        async with running_coordinator(settings) as coordinator, Browser(coordinator) as browser:
            await browser.register("alice")
            browser.http.headers.update(evil)
            page = await browser.get("/contribute")
            enrolled = await browser.post("/contribute/agents", {"name": "rig"}, page="/contribute")
            assert page.status_code == 200 and enrolled.status_code == 200, enrolled.text
            for response in (page, enrolled):
                assert "evil.example" not in response.text
            assert expected in html.unescape(enrolled.text)


def test_contribute_enroll_rejects_bad_names_and_missing_csrf(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        for name in ("", "   ", "x" * 65):
            response = client.post(
                "/contribute/agents",
                data={"csrf_token": csrf(client, "/contribute"), "name": name},
            )
            assert response.status_code == 422, name
            assert "Give the agent a name of 1–64 characters." in response.text
            assert 'id="agent-token"' not in response.text
        assert client.post("/contribute/agents", data={"name": "rig"}).status_code == 403


def test_contribute_admin_agents_are_approved_unless_configured_off(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        as_admin(client)
        agent_id, _ = enroll(client)
        assert _agent(client, agent_id).approved
    with app_client(tmp_path / "off", auto_approve_admin_agents=False) as client:
        as_admin(client)
        agent_id, _ = enroll(client)
        assert not _agent(client, agent_id).approved


def test_contribute_lists_online_agent_with_gpu_and_average(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        agent_id, token = enroll(client, "rig")

        async def worked() -> None:
            async with farm(client).sessions() as db:
                agent = await db.get(models.Agent, agent_id)
                assert agent is not None
                agent.jobs_done, agent.gpu_seconds = 4, 100.0
                await db.commit()

        run(client, worked)
        with agent_socket(client, token, gpu="RTX 4090", vram_mb=24576):
            row = client.get("/contribute/agents").text.split(f'id="agent-{agent_id}"')[1]
            assert "online" in row and "RTX 4090" in row and "24.0 GiB" in row
            assert 'data-label="Jobs done">4</td>' in row and "25 s" in row
        row = client.get("/contribute/agents").text.split(f'id="agent-{agent_id}"')[1]
        assert "offline" in row and "UTC" in row


def test_contribute_revoke_disconnects_the_agent_requeues_and_refuses_it(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        as_admin(client)  # auto-approved, so the agent gets the job
        agent_id, token = enroll(client)
        job_id = submit(client)
        with agent_socket(client, token) as (ws, _):
            assign = next_message(ws)
            assert isinstance(assign, Assign) and assign.jobs[0].job == job_id
            ws.send_text(encode(Heartbeat(seq=1, running=(job_id,))))
            assert post(client, f"/contribute/agents/{agent_id}/revoke") == 303
            error = next_message(ws)
            assert isinstance(error, Error) and error.code == "revoked"
            with pytest.raises(WebSocketDisconnect) as closed:
                next_message(ws)
            assert closed.value.code == CloseCode.BAD_TOKEN
        assert job_row(client, job_id).state == JobState.QUEUED
        assert job_id in farm(client).queue
        with client.websocket_connect("/agent/ws") as ws:
            ws.send_text(hello(token))
            refused = decode_from_coordinator(ws.receive_text())
            assert isinstance(refused, Error) and refused.code == "revoked"
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_text()
            assert closed.value.code == CloseCode.BAD_TOKEN
        assert "revoked" in client.get("/contribute/agents").text
        assert post(client, f"/contribute/agents/{agent_id}/revoke") == 409
        assert "agent.revoke" in audit_actions(client)


def test_contribute_cannot_revoke_another_users_agent(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        agent_id, _ = enroll(client)
        logout(client)
        register(client, "bob")
        assert post(client, f"/contribute/agents/{agent_id}/revoke") == 404
        assert agent_id not in client.get("/contribute").text
        assert not _agent(client, agent_id).revoked


def test_contribute_shows_credit_and_weight(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        alice = user_id(client, "alice")

        async def earn() -> None:
            async with farm(client).sessions() as db:
                user = await db.get(models.User, alice)
                assert user is not None
                user.credit = 50.0
                await db.commit()

        run(client, earn)
        page = client.get("/contribute").text
        assert 'id="credit">50.0<' in page, page
        assert "<strong>1.50×</strong>" in page
