"""Webhooks per API key, delivered to a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from coordinator.services import api_webhooks as webhooks
from coordinator.services import webhook_keys
from coordinator.store import models
from protocol import Assign, ResultAck, Welcome
from tests.support.coordinators import (
    PASSWORD,
    RunningCoordinator,
    api_client,
    make_settings,
    provision,
    running_coordinator,
)
from tests.support.scripted_agent import ScriptedAgent
from tests.support.webhook_receiver import Received, receiving, verify

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


async def _hook(coordinator: RunningCoordinator, url: str) -> tuple[str, str]:
    """Give alice's (only) key a webhook, as the profile does: (key id, secret)."""
    hooks = webhooks.of(coordinator.app.state)
    async with coordinator.farm.sessions() as db:
        user = await db.scalar(select(models.User).where(models.User.username == "alice"))
        key = await db.scalar(select(models.ApiKey).where(models.ApiKey.user_id == user.id))
        assert user is not None and key is not None
        _, secret = await webhook_keys.configure(db, hooks, user, key.id, url)
        await db.commit()
    assert secret is not None and secret.startswith("whsec_")
    return key.id, secret


async def _log(coordinator: RunningCoordinator) -> list[models.WebhookDelivery]:
    async with coordinator.farm.sessions() as db:
        return list(await db.scalars(select(models.WebhookDelivery)))


async def _run_one_job(coordinator: RunningCoordinator, key: str, token: str) -> str:
    async with api_client(coordinator, key) as client:
        agent = ScriptedAgent(coordinator.ws, token)
        assert isinstance(await agent.connect(), Welcome)
        answer = await client.post("/api/v1/jobs", json={"prompt": "a cube", "steps": 8})
        job_id = str(answer.json()["jobs"][0]["id"])
        assign = await agent.expect(Assign)
        await agent.upload(job_id, assign.jobs[0].attempt)
        assert (await agent.expect(ResultAck)).status == "stored"
        await agent.close()
    return job_id


async def test_webhooks_job_end_is_posted_signed_and_logged(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, webhooks_allow_private=True)
    async with receiving() as receiver, running_coordinator(settings) as coordinator:
        key, token_file = await provision(settings, tmp_path)
        key_id, secret = await _hook(coordinator, receiver.url)
        job_id = await _run_one_job(coordinator, key, token_file.read_text().strip())
        (got,) = await receiver.wait_for(1)
        assert got.path == "/hook" and got.headers["shapefarm-event"] == "job.finished"
        data = verify(secret, got)
        assert data["event"] == "job.finished" and data["job"]["id"] == job_id
        assert data["job"]["state"] == "succeeded"
        assert data["job"]["result"]["downloads"]["glb"] == f"/api/v1/jobs/{job_id}/download/glb"
        forged = Received(got.path, got.headers, got.body.replace(b"succeeded", b"failed!!!"))
        with pytest.raises(AssertionError):
            verify(secret, forged)
        async with asyncio.timeout(10):
            await webhooks.of(coordinator.app.state).wait_logged(1)
        entries = await _log(coordinator)
        assert [(e.api_key_id, e.job_id, e.status_code, e.attempts) for e in entries] == [
            (key_id, job_id, 200, 1)
        ]


async def test_webhooks_failed_attempts_are_retried_with_backoff(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, webhooks_allow_private=True)
    async with receiving((500, 503)) as receiver, running_coordinator(settings) as coordinator:
        webhooks.of(coordinator.app.state).backoff_s = 0.05
        key, token_file = await provision(settings, tmp_path)
        _, secret = await _hook(coordinator, receiver.url)
        await _run_one_job(coordinator, key, token_file.read_text().strip())
        got = await receiver.wait_for(3)
        assert len({r.headers["shapefarm-delivery"] for r in got}) == 1  # one delivery
        assert all(verify(secret, r)["event"] == "job.finished" for r in got)
        async with asyncio.timeout(10):
            await webhooks.of(coordinator.app.state).wait_logged(1)
        entries = await _log(coordinator)
        assert [(e.status_code, e.attempts) for e in entries] == [(200, 3)]


async def _csrf(client: httpx.AsyncClient, path: str) -> str:
    match = CSRF.search((await client.get(path)).text)
    assert match
    return match.group(1)


async def test_webhooks_profile_saves_tests_and_shows_the_log(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, webhooks_allow_private=False)
    async with (
        receiving() as receiver,
        running_coordinator(settings) as coordinator,
        httpx.AsyncClient(base_url=coordinator.http, timeout=30) as web,
    ):
        form = {"username": "alice", "password": PASSWORD, "password2": PASSWORD}
        form["csrf_token"] = await _csrf(web, "/register")
        assert (await web.post("/register", data=form)).status_code == 303
        token = await _csrf(web, "/profile")
        created = await web.post("/profile/api-keys", data={"csrf_token": token, "name": "k"})
        key_id = re.search(r'id="key-([^"]+)"', created.text)
        assert key_id is not None
        path = f"/profile/api-keys/{key_id.group(1)}/webhook"
        refused = await web.post(path, data={"csrf_token": token, "url": receiver.url})
        assert refused.status_code == 400 and "must be public" in refused.text
        webhooks.of(coordinator.app.state).allow_private = True  # as the setting would
        saved = await web.post(path, data={"csrf_token": token, "url": receiver.url})
        assert saved.status_code == 200 and 'id="new-webhook-secret"' in saved.text
        secret = re.search(r'id="new-webhook-secret">([^<]+)<', saved.text)
        assert secret is not None
        tested = await web.post(path + "/test", data={"csrf_token": token})
        assert "Test delivered: HTTP 200." in tested.text
        (got,) = await receiver.wait_for(1)
        assert verify(secret.group(1), got)["event"] == "ping"
        page = (await web.get("/profile")).text
        assert "HTTP 200" in page and "ping" in page and "new-webhook-secret" not in page
        again = await web.post(path + "/test", data={"csrf_token": token})
        assert "wait a moment" in again.text  # the test button is rate-limited
        other = await web.post("/profile/api-keys/nope/webhook", data={"csrf_token": token})
        assert other.status_code == 404
        # Removing the URL keeps the secret (jobs may name their own URLs); a new one
        # replaces it and is shown once.
        removed = await web.post(path, data={"csrf_token": token, "url": ""})
        assert "Webhook removed." in removed.text and "Replace secret" in removed.text
        made = await web.post(path + "/secret", data={"csrf_token": token})
        new_secret = re.search(r'id="new-webhook-secret">([^<]+)<', made.text)
        assert made.status_code == 200 and new_secret is not None
        assert new_secret.group(1) != secret.group(1)
        async with coordinator.farm.sessions() as db:
            key = await db.get(models.ApiKey, key_id.group(1))
            assert key is not None and key.webhook_url is None
            assert key.webhook_secret == new_secret.group(1)
        assert "new-webhook-secret" not in (await web.get("/profile")).text
        other = await web.post("/profile/api-keys/nope/webhook/secret", data={"csrf_token": token})
        assert other.status_code == 404
