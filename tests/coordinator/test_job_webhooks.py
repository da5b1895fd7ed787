"""Webhooks per job (``webhook_url`` on POST /api/v1/jobs), delivered to real HTTP
receivers on 127.0.0.1 through a live coordinator."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from coordinator.services import api_webhooks as webhooks
from coordinator.services import job_webhooks, webhook_keys
from coordinator.store import models
from protocol import Assign, ResultAck, Welcome
from tests.support.coordinators import (
    RunningCoordinator,
    api_client,
    logged_in,
    make_settings,
    provision,
    running_coordinator,
)
from tests.support.scripted_agent import ScriptedAgent
from tests.support.webhook_receiver import Received, Receiver, make_secret, receiving, verify

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
ROOMY_TIER = """
[tiers.free]
rank = 0
weight = 1.0
daily_quota = 1000
max_concurrent = 1
max_steps = 64
max_variants = 4
max_guidance = 50.0
max_queued = 100
"""


async def _secret(coordinator: RunningCoordinator, username: str) -> str:
    return await make_secret(coordinator.farm.sessions, username)


async def _submit(client: httpx.AsyncClient, **extra: Any) -> httpx.Response:
    return await client.post("/api/v1/jobs", json={"prompt": "a cube", "steps": 8, **extra})


async def _finish(agent: ScriptedAgent, job_id: str) -> None:
    assign = await agent.expect(Assign)
    assert assign.jobs[0].job == job_id
    await agent.upload(job_id, assign.jobs[0].attempt)
    assert (await agent.expect(ResultAck)).status == "stored"


async def _log(coordinator: RunningCoordinator) -> list[models.WebhookDelivery]:
    async with coordinator.farm.sessions() as db:
        return list(await db.scalars(select(models.WebhookDelivery)))


async def _logged(coordinator: RunningCoordinator, count: int) -> None:
    async with asyncio.timeout(10):
        await webhooks.of(coordinator.app.state).wait_logged(count)


def _settings(tmp_path: Path, **overrides: Any) -> Any:
    tiers = tmp_path / "tiers.toml"
    tiers.write_text(ROOMY_TIER)
    return make_settings(tmp_path / "data", tiers_file=tiers, **overrides)


async def test_job_webhook_is_signed_and_only_hears_its_own_job(tmp_path: Path) -> None:
    settings = _settings(tmp_path, webhooks_allow_private=True)
    async with (
        receiving() as mine,
        receiving() as bobs,
        running_coordinator(settings) as coordinator,
    ):
        alice_key, token_file = await provision(settings, tmp_path, "alice")
        bob_key, _ = await provision(settings, tmp_path, "bob")
        secret, bob_secret = await _secret(coordinator, "alice"), await _secret(coordinator, "bob")
        agent = ScriptedAgent(coordinator.ws, token_file.read_text().strip())
        assert isinstance(await agent.connect(), Welcome)
        async with (
            api_client(coordinator, alice_key) as alice,
            api_client(coordinator, bob_key) as bob,
        ):
            # Bob's job (with his own URL), then alice's plain job, then alice's with a URL.
            answer = await _submit(bob, webhook_url=bobs.url)
            assert answer.status_code == 201, answer.text
            bob_job = answer.json()["jobs"][0]["id"]
            await _finish(agent, bob_job)
            plain = (await _submit(alice)).json()["jobs"][0]
            assert "webhook_url" not in plain
            await _finish(agent, plain["id"])
            answer = await _submit(alice, webhook_url=mine.url)
            assert answer.status_code == 201, answer.text
            job = answer.json()["jobs"][0]
            assert job["webhook_url"] == mine.url
            await _finish(agent, job["id"])
            (got,) = await mine.wait_for(1)
            (bobs_got,) = await bobs.wait_for(1)
            await _logged(coordinator, 2)
            assert (await alice.get(f"/api/v1/jobs/{job['id']}")).json()["webhook_url"] == mine.url
        await agent.close()
        assert got.headers["shapefarm-event"] == "job.finished"
        data = verify(secret, got)
        assert data["job"]["id"] == job["id"] and data["job"]["state"] == "succeeded"
        assert data["job"]["result"]["downloads"]["glb"].endswith(f"/{job['id']}/download/glb")
        assert verify(bob_secret, bobs_got)["job"]["id"] == bob_job
        assert mine.requests == [got]  # nothing of bob's, nothing of the plain job
        entries = {e.job_id: e for e in await _log(coordinator)}
        assert set(entries) == {job["id"], bob_job}
        assert entries[job["id"]].per_job and entries[job["id"]].url == mine.url
        assert (entries[job["id"]].status_code, entries[job["id"]].attempts) == (200, 1)
        assert entries[bob_job].api_key_id != entries[job["id"]].api_key_id
        assert webhooks.of(coordinator.app.state).per_job.jobs == {}  # nothing left pending


async def test_job_webhook_retries_and_goes_to_the_key_url_as_well(tmp_path: Path) -> None:
    settings = _settings(tmp_path, webhooks_allow_private=True)
    async with (
        receiving((500, 503)) as job_receiver,
        receiving() as key_receiver,
        running_coordinator(settings) as coordinator,
    ):
        webhooks.of(coordinator.app.state).backoff_s = 0.05
        key, token_file = await provision(settings, tmp_path)
        async with coordinator.farm.sessions() as db:
            user = await db.scalar(select(models.User))
            api_key = await db.scalar(select(models.ApiKey))
            assert user is not None and api_key is not None
            hooks = webhooks.of(coordinator.app.state)
            _, secret = await webhook_keys.configure(db, hooks, user, api_key.id, key_receiver.url)
            await db.commit()
        assert secret is not None
        agent = ScriptedAgent(coordinator.ws, token_file.read_text().strip())
        assert isinstance(await agent.connect(), Welcome)
        async with api_client(coordinator, key) as client:
            answer = await _submit(client, webhook_url=job_receiver.url.replace("/hook", "/job"))
            assert answer.status_code == 201, answer.text
            job_id = answer.json()["jobs"][0]["id"]
            await _finish(agent, job_id)
            # The same URL as the key's: one delivery, not two.
            same = (await _submit(client, webhook_url=key_receiver.url)).json()["jobs"][0]["id"]
            await _finish(agent, same)
        await agent.close()
        tries = await job_receiver.wait_for(3)
        assert {r.path for r in tries} == {"/job"}
        assert len({r.headers["shapefarm-delivery"] for r in tries}) == 1  # one delivery
        assert all(verify(secret, r)["job"]["id"] == job_id for r in tries)
        await _logged(coordinator, 3)
        to_key = await key_receiver.wait_for(2)
        assert sorted(verify(secret, r)["job"]["id"] for r in to_key) == sorted([job_id, same])
        entries = await _log(coordinator)
        per_job = [(e.job_id, e.status_code, e.attempts) for e in entries if e.per_job]
        assert per_job == [(job_id, 200, 3)]
        assert sorted(e.job_id for e in entries if not e.per_job) == sorted([job_id, same])


async def _refused(client: httpx.AsyncClient, url: Any) -> dict[str, Any]:
    answer = await _submit(client, webhook_url=url)
    assert answer.status_code in (409, 422, 429), answer.text
    error: dict[str, Any] = answer.json()["error"]
    error["status"] = answer.status_code
    return error


async def test_job_webhook_bad_urls_missing_secret_and_bounds(tmp_path: Path) -> None:
    settings = _settings(tmp_path, webhooks_allow_private=False)
    async with running_coordinator(settings) as coordinator:
        key, _ = await provision(settings, tmp_path)
        async with api_client(coordinator, key) as client:
            # No secret yet: refused, saying where to make one.
            error = await _refused(client, "https://hooks.example.org/a")
            assert error["code"] == "webhook_secret_missing" and error["status"] == 409
            assert "profile" in error["message"]
            assert error["details"][0]["loc"] == ["body", "webhook_url"]
            await _secret(coordinator, "alice")
            bad = {
                "ftp://hooks.example.org/x": "starts with https://",
                "https://user:pw@hooks.example.org/x": "user name or password",
                "http://127.0.0.1:9/x": "must be public",
                "http://169.254.169.254/latest/meta-data": "must be public",
                "http://[::ffff:10.0.0.1]/x": "must be public",
                "http://localhost:8000/x": "localhost",
                "https://hooks.example.org/a b": "spaces",
                "https://hooks.example.org:0/x": "port 0",
                "not a url": "starts with https://",
            }
            for url, why in bad.items():
                error = await _refused(client, url)
                assert (error["code"], error["status"]) == ("webhook_url_invalid", 422), url
                assert why in error["message"], (url, error)
                assert error["details"][0]["loc"] == ["body", "webhook_url"]
            for value in ("https://hooks.example.org/" + "a" * 2000, "", 7, ["https://x.org"]):
                error = await _refused(client, value)
                assert error["code"] == "validation_failed"
                assert error["details"][0]["loc"] == ["body", "webhook_url"]
            # At most 5 distinct URLs among the waiting jobs (no agent: they all wait).
            for i in range(job_webhooks.MAX_URLS_PER_USER):
                url = f"https://hooks{i}.example.org/x"
                answer = await _submit(client, webhook_url=url, variants=2)
                assert answer.status_code == 201, answer.text
            error = await _refused(client, "https://hooks-new.example.org/x")
            assert (error["code"], error["status"]) == ("webhook_urls_exceeded", 429)
            reused = await _submit(client, webhook_url="https://hooks0.example.org/x")
            assert reused.status_code == 201
            # Cancelling one URL's jobs frees its place.
            listed = (await client.get("/api/v1/jobs?limit=100")).json()["jobs"]
            for job in listed:
                if job.get("webhook_url") == "https://hooks1.example.org/x":
                    assert (await client.post(f"/api/v1/jobs/{job['id']}/cancel")).is_success
            answer = await _submit(client, webhook_url="https://hooks-new.example.org/x")
            assert answer.status_code == 201, answer.text
        async with coordinator.farm.sessions() as db:
            count = await db.scalar(select(func.count()).select_from(models.Job))
            with_url = await db.scalar(
                select(func.count()).where(models.Job.webhook_url.is_not(None))
            )
        assert (count, with_url) == (12, 12)  # nothing stored for a refusal


async def test_job_webhook_survives_a_restart(tmp_path: Path) -> None:
    settings = _settings(tmp_path, webhooks_allow_private=True)
    receiver: Receiver
    async with receiving() as receiver:
        async with running_coordinator(settings) as coordinator:
            key, token_file = await provision(settings, tmp_path)
            secret = await _secret(coordinator, "alice")
            async with api_client(coordinator, key) as client:
                answer = await _submit(client, webhook_url=receiver.url)
                job_id = answer.json()["jobs"][0]["id"]
        async with running_coordinator(settings) as coordinator:
            assert job_id in webhooks.of(coordinator.app.state).per_job.jobs
            agent = ScriptedAgent(coordinator.ws, token_file.read_text().strip())
            assert isinstance(await agent.connect(), Welcome)
            await _finish(agent, job_id)
            (got,) = await receiver.wait_for(1)
            await agent.close()
        assert verify(secret, got)["job"]["id"] == job_id


async def test_a_keys_waiting_deliveries_are_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhooks, "PENDING_PER_KEY", 1)
    settings = _settings(tmp_path, webhooks_allow_private=True)
    async with receiving((500,) * 10) as receiver, running_coordinator(settings) as coordinator:
        webhooks.of(coordinator.app.state).backoff_s = 30.0  # the first stays between attempts
        key, token_file = await provision(settings, tmp_path)
        await _secret(coordinator, "alice")
        agent = ScriptedAgent(coordinator.ws, token_file.read_text().strip())
        assert isinstance(await agent.connect(), Welcome)
        async with api_client(coordinator, key) as client:
            first = (await _submit(client, webhook_url=receiver.url)).json()["jobs"][0]["id"]
            await _finish(agent, first)
            await receiver.wait_for(1)
            second = (await _submit(client, webhook_url=receiver.url)).json()["jobs"][0]["id"]
            await _finish(agent, second)
            await _logged(coordinator, 1)
        await agent.close()
        (entry,) = await _log(coordinator)
        assert (entry.job_id, entry.status_code, entry.attempts) == (second, None, 0)
        assert entry.error.startswith("dropped: 1 deliveries") and entry.per_job
        assert [verify_job(r) for r in receiver.requests] == [first]


def verify_job(got: Received) -> str:
    """The job a delivery names (unsigned: the secret is not needed here)."""
    job_id: str = json.loads(got.body)["job"]["id"]
    return job_id


async def test_a_name_that_resolves_to_a_private_address_is_not_called(tmp_path: Path) -> None:
    """A host name passes the submission (it is not an address) but is resolved and
    refused at each attempt: nothing reaches the receiver, the log says why."""
    name = socket.gethostname()
    try:
        address = socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)[0][4][0]
    except OSError:
        pytest.skip(f"this machine's name {name!r} does not resolve")
    if ipaddress.ip_address(address).is_global:
        pytest.skip(f"this machine's name {name!r} resolves to a public address")
    settings = _settings(tmp_path, webhooks_allow_private=False)
    async with receiving() as receiver, running_coordinator(settings) as coordinator:
        webhooks.of(coordinator.app.state).backoff_s = 0.01
        key, token_file = await provision(settings, tmp_path)
        await _secret(coordinator, "alice")
        agent = ScriptedAgent(coordinator.ws, token_file.read_text().strip())
        assert isinstance(await agent.connect(), Welcome)
        async with api_client(coordinator, key) as client:
            url = f"http://{name}:{receiver.port}/hook"
            answer = await _submit(client, webhook_url=url)
            assert answer.status_code == 201, answer.text
            await _finish(agent, answer.json()["jobs"][0]["id"])
            await _logged(coordinator, 1)
        await agent.close()
        (entry,) = await _log(coordinator)
        assert entry.status_code is None and entry.attempts == webhooks.ATTEMPTS
        assert "must be public" in entry.error and entry.per_job
        assert receiver.requests == []


async def test_a_requeued_job_tells_its_own_url_again(tmp_path: Path) -> None:
    settings = _settings(tmp_path, webhooks_allow_private=True)
    async with receiving() as receiver, running_coordinator(settings) as coordinator:
        key, token_file = await provision(settings, tmp_path)
        await provision(settings, tmp_path, "root", admin=True)
        secret = await _secret(coordinator, "alice")
        async with api_client(coordinator, key) as client:
            answer = await _submit(client, webhook_url=receiver.url)
            job_id = answer.json()["jobs"][0]["id"]
            assert (await client.post(f"/api/v1/jobs/{job_id}/cancel")).status_code == 200
        (cancelled,) = await receiver.wait_for(1)
        assert verify(secret, cancelled)["job"]["state"] == "cancelled"
        async with logged_in(coordinator, "root") as admin:
            token = CSRF.search((await admin.get("/admin/jobs")).text)
            assert token is not None
            requeued = await admin.post(
                f"/admin/jobs/{job_id}/requeue", data={"csrf_token": token.group(1)}
            )
            assert requeued.status_code == 303, requeued.text
        agent = ScriptedAgent(coordinator.ws, token_file.read_text().strip())
        assert isinstance(await agent.connect(), Welcome)
        await _finish(agent, job_id)
        await agent.close()
        got = await receiver.wait_for(2)
        assert verify(secret, got[1])["job"]["state"] == "succeeded"
