"""The finished-job e-mail: real agents' results over WebSocket, a real SMTP server.

Only the owner who opted in and proved an address gets it, once per job, and
only for a job that waited at least ``notify_after_s``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import update

from coordinator.cli.admin_cli import admin_db, create_api_key, create_user, issue_token
from coordinator.services import job_mail
from coordinator.settings import Settings
from coordinator.store import models
from protocol import Assign, ResultAck, Welcome
from tests.support.coordinators import PASSWORD, make_settings, running_coordinator
from tests.support.mailserver import free_port, smtp_server
from tests.support.scripted_agent import ScriptedAgent


async def _user(settings: Settings, name: str, *, opted_in: bool, locale: str | None = None) -> str:
    await create_user(settings, name, PASSWORD, None, is_admin=False)
    async with admin_db(settings) as db:
        await db.execute(
            update(models.User)
            .where(models.User.username == name)
            .values(
                email=f"{name}@example.org",
                email_verified_at=time.time(),
                notify_email=opted_in,
                locale=locale,
            )
        )
        await db.commit()
    return await create_api_key(settings, name, "tests")


async def _submit(base: str, key: str, prompt: str) -> str:
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {key}"}
    ) as client:
        response = await client.post("/api/v1/jobs", json={"prompt": prompt, "steps": 8})
        assert response.status_code == 201, response.text
        return str(response.json()["jobs"][0]["id"])


async def _finish(agent: ScriptedAgent, count: int) -> list[str]:
    """Take ``count`` assignments and upload a result for each."""
    done: list[str] = []
    while len(done) < count:
        assign = await agent.expect(Assign, within=15)
        for spec in assign.jobs:
            await agent.upload(spec.job, spec.attempt)
            assert (await agent.expect(ResultAck)).status == "stored"
            done.append(spec.job)
    return done


async def test_owner_who_opted_in_gets_one_mail_per_long_job(tmp_path: Path) -> None:
    with smtp_server() as inbox:
        # Picked after the mail server's socket: a port just freed by free_port() may be
        # handed to the next bind of port 0 (the mail server's) otherwise.
        port = free_port()
        settings = make_settings(
            tmp_path / "data",
            port=port,
            notify_after_s=0.0,
            **inbox.settings(f"http://127.0.0.1:{port}"),
        )
        alice = await _user(settings, "alice", opted_in=True, locale="ru")
        bob = await _user(settings, "bob", opted_in=False)
        _, token = await issue_token(settings, "alice", "gpu", approved=True)
        async with running_coordinator(settings, port=port) as coord:
            alice_job = await _submit(coord.http, alice, "a red chair")
            bob_job = await _submit(coord.http, bob, "a blue lamp")
            agent = ScriptedAgent(coord.ws, token)
            assert isinstance(await agent.connect(), Welcome)
            assert sorted(await _finish(agent, 2)) == sorted([alice_job, bob_job])
            # Sending the stored result again (a reconnecting agent does) mails nothing new.
            await agent.upload(alice_job, 1)
            assert (await agent.expect(ResultAck)).status == "duplicate"
            await agent.close()

            mail = await inbox.next()
            assert mail.envelope_to == ["alice@example.org"]
            assert mail.message["Subject"] == "Ваша 3D-модель готова"
            assert "a red chair" in mail.text and f"/jobs/{alice_job}" in mail.text
            assert f"{coord.http}/jobs/{alice_job}" in mail.html
            await coord.app.state.mailer.drain()
            assert inbox.empty(), "bob, who did not opt in, or a duplicate got a mail"
            async with coord.farm.sessions() as db:
                job = await db.get(models.Job, alice_job)
                assert job is not None and job.notified_at is not None


async def test_no_mail_for_a_quick_job_or_without_a_proven_address(tmp_path: Path) -> None:
    with smtp_server() as inbox:
        # Picked after the mail server's socket: a port just freed by free_port() may be
        # handed to the next bind of port 0 (the mail server's) otherwise.
        port = free_port()
        settings = make_settings(
            tmp_path / "data",
            port=port,
            notify_after_s=3600.0,
            **inbox.settings(f"http://127.0.0.1:{port}"),
        )
        alice = await _user(settings, "alice", opted_in=True)
        _, token = await issue_token(settings, "alice", "gpu", approved=True)
        async with running_coordinator(settings, port=port) as coord:
            quick = await _submit(coord.http, alice, "a quick cube")
            agent = ScriptedAgent(coord.ws, token)
            await agent.connect()
            await _finish(agent, 1)
            await coord.app.state.mailer.drain()
            assert inbox.empty(), "a job that waited seconds was mailed about"

            # Claimed directly: a long-waiting job of a user whose address is unproven.
            async with coord.farm.sessions() as db:
                await db.execute(
                    update(models.Job).where(models.Job.id == quick).values(created_at=0.0)
                )
                await db.execute(update(models.User).values(email_verified_at=None))
                await db.commit()
                assert await job_mail.claim(db, quick, 3600.0, time.time()) is None
                await db.execute(update(models.User).values(email_verified_at=1.0))
                await db.commit()
                found: Any = await job_mail.claim(db, quick, 3600.0, time.time())
                assert found is not None and found[1].username == "alice"
                # Claimed once: never again.
                assert await job_mail.claim(db, quick, 3600.0, time.time()) is None
            await agent.close()
