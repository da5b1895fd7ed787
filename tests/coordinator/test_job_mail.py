"""The finished-job e-mail: real agents' results over WebSocket, a real SMTP server.

Only the owner who opted in and proved an address gets it, once per job, and
only for a job that waited at least ``notify_after_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from coordinator.cli.admin_cli import admin_db, create_api_key, create_user, issue_token
from coordinator.services import job_mail
from coordinator.settings import Settings
from coordinator.store import models
from protocol import Assign, ResultAck, Welcome
from tests.support.coordinators import (
    PASSWORD,
    RunningCoordinator,
    make_settings,
    running_coordinator,
    wait_for,
)
from tests.support.mailserver import Inbox, free_port, smtp_server
from tests.support.scripted_agent import ScriptedAgent


async def _outbox_empty(coord: RunningCoordinator) -> bool:
    async with coord.farm.sessions() as db:
        return not list(await db.scalars(select(models.JobMailOutbox)))


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

            # Its outbox row was looked at and dropped without a mail.
            await wait_for(lambda: _outbox_empty(coord), 10, "the quick job's row to go")
            assert inbox.empty()
            async with coord.farm.sessions() as db:
                job = await db.get(models.Job, quick)
                user = await db.scalar(select(models.User))
            assert job is not None and user is not None and job.notified_at is None
            # The rule itself, on a long-waiting job of a user whose address is unproven.
            job.created_at = 0.0
            user.email_verified_at = None
            assert not job_mail.mail_for(job, user, 3600.0)
            user.email_verified_at = 1.0
            assert job_mail.mail_for(job, user, 3600.0)
            job.notified_at = time.time()  # sent once: never again
            assert not job_mail.mail_for(job, user, 3600.0)
            await agent.close()


async def _mailed_setup(tmp_path: Path, smtp_port: int) -> tuple[Settings, str, str]:
    port = free_port()
    inbox_settings = {
        "smtp_host": "127.0.0.1", "smtp_port": smtp_port, "smtp_tls": "none",
        "mail_from": "shapefarm <noreply@farm.test>", "public_url": f"http://127.0.0.1:{port}",
    }  # fmt: skip
    settings = make_settings(
        tmp_path / "data", port=port, notify_after_s=0.0, smtp_timeout_s=2.0, **inbox_settings
    )
    alice = await _user(settings, "alice", opted_in=True)
    _, token = await issue_token(settings, "alice", "gpu", approved=True)
    return settings, alice, token


async def _run_one(coord: RunningCoordinator, key: str, token: str, prompt: str) -> str:
    """One job of the key's owner, run to its end by a scripted agent."""
    job_id = await _submit(coord.http, key, prompt)
    agent = ScriptedAgent(coord.ws, token)
    assert isinstance(await agent.connect(), Welcome)
    await _finish(agent, 1)
    await agent.close()
    return job_id


@dataclass
class _Mailing:
    """A coordinator mailing through a local SMTP server, its retries 0.05 s apart."""

    inbox: Inbox
    coord: RunningCoordinator
    mails: job_mail.JobMails
    key: str
    token: str

    async def run(self, prompt: str) -> str:
        return await _run_one(self.coord, self.key, self.token, prompt)


@contextlib.asynccontextmanager
async def _mailing(tmp_path: Path, refuse: int = 0) -> AsyncIterator[_Mailing]:
    with smtp_server(refuse=refuse) as inbox:
        settings, alice, token = await _mailed_setup(tmp_path, inbox.port)
        async with running_coordinator(settings, port=settings.port) as coord:
            mails = coord.app.state.job_mails
            mails.backoff_s = mails.pump.poll_s = 0.05
            mails.pump.wake()  # the first look, at start, is waiting out the old poll
            yield _Mailing(inbox, coord, mails, alice, token)


async def test_a_mail_the_server_refuses_is_sent_when_it_takes_mail_again(
    tmp_path: Path,
) -> None:
    """The mail server says "try again later" (451) twice: the mail arrives on the
    third attempt, once, and the job is marked mailed."""
    async with _mailing(tmp_path, refuse=2) as m:
        job_id = await m.run("a green vase")
        mail = await m.inbox.next()
        assert f"/jobs/{job_id}" in mail.text and m.inbox.refuse == 0
        await wait_for(lambda: _outbox_empty(m.coord), 10, "the sent mail's row to go")
        async with m.coord.farm.sessions() as db:
            job = await db.get(models.Job, job_id)
            assert job is not None and job.notified_at is not None
        assert (m.mails.sent, m.mails.given_up) == (1, 0)
    assert m.inbox.empty()


async def test_a_mail_for_a_job_that_ended_while_nothing_sent_goes_after_a_restart(
    tmp_path: Path,
) -> None:
    """The mail server is down and the coordinator stops before any attempt succeeds
    (here: the sender is stopped, as if the process died): after the restart, with the
    server back, the mail goes out."""
    smtp_port = free_port()
    settings, alice, token = await _mailed_setup(tmp_path, smtp_port)
    async with running_coordinator(settings, port=settings.port) as coord:
        await coord.app.state.job_mails.stop()
        job_id = await _run_one(coord, alice, token, "a tall lamp")
        assert not await _outbox_empty(coord)  # written with the job's end
    with smtp_server(port=smtp_port) as inbox:
        async with running_coordinator(settings, port=settings.port) as coord:
            mail = await inbox.next()
            assert f"/jobs/{job_id}" in mail.text
            await wait_for(lambda: _outbox_empty(coord), 10, "the sent mail's row to go")


async def test_a_mail_is_given_up_after_its_attempts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(job_mail, "ATTEMPTS", 2)
    async with _mailing(tmp_path, refuse=5) as m:
        job_id = await m.run("a small boat")
        async with asyncio.timeout(10):
            await m.mails.wait_done(1)
        assert (m.mails.sent, m.mails.given_up, m.inbox.refuse) == (0, 1, 3)
        assert await _outbox_empty(m.coord)
        async with m.coord.farm.sessions() as db:
            job = await db.get(models.Job, job_id)
            assert job is not None and job.notified_at is None


async def test_a_mail_that_cannot_be_made_is_given_up_not_retried_forever(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in making the mail (here: the template) counts as a failed attempt: after
    its attempts the row goes, instead of coming back every lease for ever."""
    monkeypatch.setattr(job_mail, "ATTEMPTS", 2)

    def broken(*args: Any) -> Any:
        raise KeyError("job_done.html")

    monkeypatch.setattr(job_mail, "job_mail", broken)
    async with _mailing(tmp_path) as m:
        await m.run("a broken mail")
        async with asyncio.timeout(10):
            await m.mails.wait_done(1)
        assert (m.mails.sent, m.mails.given_up) == (0, 1)
        assert await _outbox_empty(m.coord)
    assert m.inbox.empty()
