"""Coordinator replicas on one PostgreSQL (replica mode): any replica serves anyone.

Three replicas run in this event loop on three ports, sharing one throwaway
PostgreSQL cluster (skipped with the reason without the server binaries). Agents are
scripted over real WebSockets, browsers are raw SSE sockets, clients use the API.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from sqlalchemy import select

import scheduler
from coordinator.cli.admin_cli import create_user, issue_token
from coordinator.services import outbox
from coordinator.settings import Settings
from coordinator.store import models
from coordinator.store.bus import Note
from protocol import (
    Accepted,
    Assign,
    Cancel,
    Declined,
    Drain,
    Error,
    Pause,
    Progress,
    ResultAck,
    Resume,
    Welcome,
)
from tests.support.coordinators import (
    CSRF_FIELD,
    PASSWORD,
    TWO_A_DAY,
    RunningCoordinator,
    api_client,
    logged_in,
    make_settings,
    provision,
    running_coordinator,
    start_agent,
    stop_process,
    wait_for,
)
from tests.support.images import encoded
from tests.support.rawhttp import get, login_cookie
from tests.support.scripted_agent import ScriptedAgent
from tests.support.webhook_receiver import make_secret, receiving, verify

pytestmark = pytest.mark.slow


@contextlib.asynccontextmanager
async def replicas(
    tmp_path: Path, url: str, n: int = 3, **overrides: Any
) -> AsyncIterator[list[RunningCoordinator]]:
    settings = _settings(tmp_path, url, **overrides)
    async with contextlib.AsyncExitStack() as stack:
        coords = [await stack.enter_async_context(running_coordinator(settings)) for _ in range(n)]
        yield coords


def _settings(tmp_path: Path, url: str, **overrides: Any) -> Settings:
    return make_settings(
        tmp_path / "data",
        database_url=url,
        replicas=True,
        replica_heartbeat_s=0.2,
        replica_dead_s=1.0,
        **overrides,
    )


async def _leader(coords: list[RunningCoordinator], within: float = 10.0) -> RunningCoordinator:
    async with asyncio.timeout(within):
        while True:
            leading = [c for c in coords if c.farm.cluster.leading]
            if leading:
                assert len(leading) == 1
                return leading[0]
            await asyncio.sleep(0.05)  # leadership is taken by a 1 s retry, nothing to await


async def _until(coord: RunningCoordinator, check: Callable[[], bool], within: float = 5) -> None:
    """Wait for ``check()`` on one replica, re-checking on each change of its farm."""
    async with coord.farm.hub.subscribe("farm") as changes, asyncio.timeout(within):
        while not check():
            await changes.get()


async def _submit(client: httpx.AsyncClient, prompt: str) -> str:
    made = await client.post("/api/v1/jobs", json={"prompt": prompt, "steps": 8})
    assert made.status_code == 201, made.text
    return str(made.json()["jobs"][0]["id"])


async def test_job_submitted_on_one_replica_runs_on_another_and_streams_on_a_third(
    tmp_path: Path, postgres_url: str
) -> None:
    settings = _settings(tmp_path, postgres_url)
    key, token_file = await provision(settings, tmp_path)
    async with replicas(tmp_path, postgres_url) as (a, b, c):
        leader = await _leader([a, b, c])
        agent = ScriptedAgent(b.ws, token_file.read_text().strip())
        assert isinstance(await agent.connect(), Welcome)
        # Every replica counts it (pages say whether an agent can run a job's model).
        await _until(c, lambda: c.farm.agents_online() == 1)
        await _until(a, lambda: a.farm.agents_with("shap-e") == 1)
        assert not a.farm.agents  # its socket is B's
        cookie = await login_cookie(c.http, "alice")
        async with api_client(a, key) as on_a, api_client(c, key) as on_c:
            job_id = await _submit(on_a, "a teapot")
            assign = await agent.expect(Assign, within=10)
            assert [(s.job, s.attempt) for s in assign.jobs] == [(job_id, 1)]
            assert leader.farm.queue.get(job_id) is None
            # A browser on C watches the job while B's agent reports progress.
            stream = await get(c.port, f"/jobs/{job_id}/events", cookie)
            try:
                assert stream.status == 200
                await stream.read_event(5)  # the current state
                await agent.send(Accepted(job=job_id, attempt=1))
                await agent.send(Progress(job=job_id, attempt=1, stage="sampling", step=3, total=8))
                async with asyncio.timeout(5):
                    while 'value="3"' not in await stream.read_event(5):
                        pass
            finally:
                await stream.close()
            await agent.upload(job_id, 1)
            assert (await agent.expect(ResultAck)).status == "stored"
            job = (await on_c.get(f"/api/v1/jobs/{job_id}")).json()
            assert (job["state"], job["attempt"]) == ("succeeded", 1)
            glb = await on_c.get(f"/api/v1/jobs/{job_id}/download/glb")
            assert glb.status_code == 200 and glb.content[:4] == b"glTF"

            # Cancelled on C, the job stops on B's agent within a second.
            second = await _submit(on_c, "a chair")
            assign = await agent.expect(Assign, within=10)
            assert [s.job for s in assign.jobs] == [second]
            cancelled = await on_c.post(f"/api/v1/jobs/{second}/cancel")
            assert cancelled.status_code == 200, cancelled.text
            stop = await agent.expect(Cancel, within=1.5)
            assert (stop.job, stop.attempt) == (second, 1)
            assert (await on_a.get(f"/api/v1/jobs/{second}")).json()["state"] == "cancelled"
        await agent.close()


async def test_a_users_daily_quota_holds_across_replicas(tmp_path: Path, postgres_url: str) -> None:
    tiers = tmp_path / "tiers.toml"
    tiers.write_text(TWO_A_DAY)
    settings = _settings(tmp_path, postgres_url, tiers_file=tiers)
    key, _ = await provision(settings, tmp_path)
    async with (
        replicas(tmp_path, postgres_url, tiers_file=tiers) as coords,
        contextlib.AsyncExitStack() as stack,
    ):
        clients = [await stack.enter_async_context(api_client(c, key)) for c in coords]
        answers = await asyncio.gather(
            *(
                client.post("/api/v1/jobs", json={"prompt": f"a cup {i}", "steps": 8})
                for i, client in enumerate(clients * 3)
            )
        )
        assert sorted(a.status_code for a in answers) == [201] * 2 + [429] * 7
        listing = (await clients[2].get("/api/v1/jobs")).json()
        assert listing["total"] == 2


async def _press(client: httpx.AsyncClient, agent_id: str, action: str, **form: str) -> Any:
    """A button of the Contribute page."""
    token = CSRF_FIELD.search((await client.get("/contribute")).text)
    assert token, "no CSRF token on the Contribute page"
    return await client.post(
        f"/contribute/agents/{agent_id}/{action}", data={"csrf_token": token.group(1), **form}
    )


async def _admin_act(coord: RunningCoordinator, agent_id: str, action: str) -> None:
    """An administrator's action through the HTML route of this replica."""
    async with logged_in(coord, "root") as admin:
        token = CSRF_FIELD.search((await admin.get("/admin/agents")).text)
        assert token, "no CSRF token on the agents page"
        done = await admin.post(
            f"/admin/agents/{agent_id}/{action}", data={"csrf_token": token.group(1)}
        )
        assert done.status_code == 303, (action, done.status_code, done.text[:300])


@contextlib.asynccontextmanager
async def _agent_on_b(
    tmp_path: Path, url: str
) -> AsyncIterator[tuple[list[RunningCoordinator], str, str, ScriptedAgent]]:
    """Three replicas with a leader, an administrator "root", alice's API key and her
    agent (its token) connected to the second replica."""
    settings = _settings(tmp_path, url)
    key, token_file = await provision(settings, tmp_path)
    await create_user(settings, "root", PASSWORD, None, is_admin=True)
    token = token_file.read_text().strip()
    async with replicas(tmp_path, url) as coords:
        await _leader(coords)
        agent = ScriptedAgent(coords[1].ws, token)
        assert isinstance(await agent.connect(), Welcome)
        yield coords, key, token, agent


async def test_admin_controls_reach_an_agent_through_its_replica(
    tmp_path: Path, postgres_url: str
) -> None:
    async with _agent_on_b(tmp_path, postgres_url) as ((a, b, c), key, token, agent):
        agent_id = token.split(".")[1]
        async with api_client(a, key) as on_a:
            job_id = await _submit(on_a, "a lamp")
            assert [s.job for s in (await agent.expect(Assign)).jobs] == [job_id]
            # Its owner pauses it on the Contribute page of C, and resumes it on A.
            async with logged_in(c, "alice") as alice:
                assert (await _press(alice, agent_id, "pause", batch="finish")).status_code == 303
                assert not (await agent.expect(Pause, within=1.5)).cancel
            async with logged_in(a, "alice") as alice:
                assert (await _press(alice, agent_id, "resume")).status_code == 303
                await agent.expect(Resume, within=1.5)
            await _admin_act(c, agent_id, "drain")  # on C; the agent is on B
            await agent.expect(Drain, within=1.5)

            async def drained_everywhere(flag: bool = True) -> bool:
                return all(coord.farm.is_drained(agent_id) is flag for coord in (a, b, c))

            # The other replicas learn it from the same note, each in its own time.
            await wait_for(drained_everywhere, 3.0, "every replica to know of the drain")
            await _admin_act(a, agent_id, "resume")  # the agent reconnects ready for work
            with pytest.raises(websockets.ConnectionClosed):
                await agent.expect(Welcome, within=1.5)
            await wait_for(
                lambda: drained_everywhere(False), 3.0, "every replica to know of the resume"
            )
            # It comes back through C with the job it still runs: C adopts it.
            agent = ScriptedAgent(c.ws, token)
            assert isinstance(await agent.connect(holding=((job_id, 1),)), Welcome)
            await _admin_act(b, agent_id, "revoke")  # on B, which no longer holds it
            refused = await agent.expect(Error, within=1.5)
            assert refused.code == "revoked"
            job = (await on_a.get(f"/api/v1/jobs/{job_id}")).json()
            assert (job["state"], job["attempt"]) == ("queued", 1)  # requeued at once
        await agent.close()


async def test_leader_failover_and_reaping_of_a_stopped_replica(
    tmp_path: Path, postgres_url: str
) -> None:
    settings = _settings(tmp_path, postgres_url)
    key, token_file = await provision(settings, tmp_path)
    _, token_b = await issue_token(settings, "alice", "second", approved=True)
    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(running_coordinator(settings))
        assert await _leader([a]) is a
        b = await stack.enter_async_context(running_coordinator(settings))
        on_b = await stack.enter_async_context(api_client(b, key))
        first = ScriptedAgent(a.ws, token_file.read_text().strip())
        assert isinstance(await first.connect(), Welcome)
        job_id = await _submit(on_b, "a cube")
        assert [s.job for s in (await first.expect(Assign)).jobs] == [job_id]
        # A dies without a word: its heartbeat stops, its sockets stay open.
        await a.farm.cluster.stop()
        # B takes the lead, reaps A (its agent's job is requeued) and runs the job elsewhere.
        assert await _leader([b]) is b
        # It goes on from the fair-share state of A's last claim.
        assert b.farm.fair_state == a.farm.fair_state != scheduler.FairState()
        second = ScriptedAgent(b.ws, token_b)
        assert isinstance(await second.connect(), Welcome)
        reassigned = await second.expect(Assign, within=10)
        assert [(s.job, s.attempt) for s in reassigned.jobs] == [(job_id, 2)]
        # The first agent's late result for attempt 1 is refused; attempt 2 finishes once.
        await second.upload(job_id, 2)
        assert (await second.expect(ResultAck)).status == "stored"
        job = (await on_b.get(f"/api/v1/jobs/{job_id}")).json()
        assert (job["state"], job["attempt"]) == ("succeeded", 2)
        await first.close()
        await second.close()


async def test_a_key_revoked_on_one_replica_is_refused_by_the_others_at_once(
    tmp_path: Path, postgres_url: str
) -> None:
    settings = _settings(tmp_path, postgres_url)
    key, _ = await provision(settings, tmp_path)
    async with replicas(tmp_path, postgres_url, n=2) as (a, b), api_client(b, key) as on_b:
        assert (await on_b.get("/api/v1/jobs")).status_code == 200  # B caches the key
        async with logged_in(a, "alice") as alice:
            token = CSRF_FIELD.search((await alice.get("/profile")).text)
            assert token
            revoked = await alice.post(
                f"/profile/api-keys/{key.split('.')[1]}/revoke",
                data={"csrf_token": token.group(1)},
            )
            assert revoked.status_code == 303, revoked.text

        async def refused() -> bool:
            return (await on_b.get("/api/v1/jobs")).status_code == 401

        # Well within the cache's 5 s lifetime: A's note dropped B's cache.
        await wait_for(refused, 1.0, "B to refuse the revoked key")


async def test_an_image_job_submitted_on_one_replica_runs_on_an_agent_of_another(
    tmp_path: Path, postgres_url: str
) -> None:
    """The holder replica sends the assign with the input image's binary frames."""
    settings = _settings(tmp_path, postgres_url)
    key, token_file = await provision(settings, tmp_path)
    async with replicas(tmp_path, postgres_url, n=2) as (a, b), api_client(a, key) as on_a:
        agent = start_agent(b.ws, token_file, tmp_path / "spool", model="instant:kind=image")
        try:
            body = {"image": base64.b64encode(encoded("PNG", (64, 48))).decode(), "steps": 4}
            made = await on_a.post("/api/v1/jobs", json=body)
            assert made.status_code == 201, made.text
            job_id = made.json()["jobs"][0]["id"]

            async def succeeded() -> bool:
                assert agent.poll() is None, "the agent died"
                return bool(
                    (await on_a.get(f"/api/v1/jobs/{job_id}")).json()["state"] == "succeeded"
                )

            await wait_for(succeeded, 60, "the image job to succeed on B's agent")
            assert not a.farm.agents and b.farm.agents  # it ran through B
        finally:
            assert stop_process(agent) == 0


async def test_a_claim_whose_assign_note_is_lost_is_still_sent(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path, postgres_url)
    key, token_file = await provision(settings, tmp_path)
    async with replicas(tmp_path, postgres_url, n=2) as coords, api_client(coords[0], key) as api:
        leader = await _leader(coords)
        holder = next(c for c in coords if c is not leader)
        cluster = leader.farm.cluster
        sent = cluster.send

        def lossy(note: Note) -> None:  # NOTIFY failed twice: the assign note is gone
            if not (note.kind == "agent" and note.action == "assign"):
                sent(note)

        monkeypatch.setattr(cluster, "send", lossy)
        agent = ScriptedAgent(holder.ws, token_file.read_text().strip())
        assert isinstance(await agent.connect(), Welcome)
        await _until(leader, lambda: leader.farm.agents_online() == 1)
        job_id = await _submit(api, "a vase")
        # The holder finds the claim on its next heartbeat (0.2 s here).
        assign = await agent.expect(Assign, within=2)
        assert [s.job for s in assign.jobs] == [job_id]
        await agent.close()


async def test_a_claim_note_overtaking_a_queue_refresh_leaves_the_job_out_of_line(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The "add" note makes a replica read the queued row; if the leader's "claimed" note
    arrives while that read is under way, the job must not go back in this replica's line
    (its pages and event streams would show a running job as queued until it ends)."""
    settings = _settings(tmp_path, postgres_url)
    key, _ = await provision(settings, tmp_path)  # no agent: the job stays queued
    async with replicas(tmp_path, postgres_url, n=2) as (a, b), api_client(a, key) as on_a:
        job_id = await _submit(on_a, "a queued cup")
        await _until(b, lambda: job_id in b.farm.queue)
        cluster = b.farm.cluster
        assert cluster is not None
        remember = b.farm.remember_user

        async def overtaken(db: Any, user_id: int) -> Any:
            # The claim note lands while the refresh is reading.
            cluster._received(Note("queue", job_id, "claimed", origin="leader"))
            return await remember(db, user_id)

        monkeypatch.setattr(b.farm, "remember_user", overtaken)
        await cluster.refresh_queued(job_id)
        assert job_id not in b.farm.queue
        monkeypatch.setattr(b.farm, "remember_user", remember)
        await cluster.refresh_queued(job_id)  # a later "add" (e.g. a requeue) still counts
        assert job_id in b.farm.queue


async def _agent_token(settings: Settings, tmp_path: Path) -> tuple[str, str, str]:
    """An API key, an agent token and that agent's id."""
    key, token_file = await provision(settings, tmp_path)
    token = token_file.read_text().strip()
    return key, token, token.split(".")[1]


async def _taken_then_declined(
    a: RunningCoordinator, b: RunningCoordinator, on_a: httpx.AsyncClient, token: str
) -> tuple[ScriptedAgent, str]:
    """The agent on B is assigned a job submitted on A and declines it (its owner's
    blocklist); returns the agent, still connected, and the job."""
    await _leader([a, b])
    agent = ScriptedAgent(b.ws, token)
    assert isinstance(await agent.connect(), Welcome)
    job_id = await _submit(on_a, "a red chair")
    assert [s.job for s in (await agent.expect(Assign)).jobs] == [job_id]
    await agent.send(Declined(job=job_id, attempt=1, reason="blocked"))
    return agent, job_id


async def test_a_blocklist_decline_on_one_replica_holds_for_the_leader(
    tmp_path: Path, postgres_url: str
) -> None:
    """The agent on B declines a job (its owner's blocklist): whichever replica leads
    never offers it that job again — the decline is read with the requeued row."""
    key, token, agent_id = await _agent_token(_settings(tmp_path, postgres_url), tmp_path)
    async with replicas(tmp_path, postgres_url, n=2) as (a, b), api_client(a, key) as on_a:
        agent, job_id = await _taken_then_declined(a, b, on_a, token)
        for coord in (a, b):
            await _until(coord, lambda c=coord: agent_id in c.farm.declined_by(job_id))
        # Only the agent that declined is connected: no assign comes back to it.
        with pytest.raises(TimeoutError):
            await agent.expect(Assign, within=1.5)
        job = (await on_a.get(f"/api/v1/jobs/{job_id}")).json()
        assert (job["state"], job["attempt"]) == ("queued", 1)
        await agent.close()


async def test_an_assignment_the_agent_ended_is_not_delivered_again_before_its_commit(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decline (as a result or a failure) ends the assignment on the holder at once, and
    its row says "claimed" until the requeue commits: a delivery that reads the row in
    between must not send the same assignment back (a full-suite run saw it do so)."""
    key, token, agent_id = await _agent_token(_settings(tmp_path, postgres_url), tmp_path)
    async with replicas(tmp_path, postgres_url, n=2) as (a, b), api_client(a, key) as on_a:
        reached, gate = asyncio.Event(), asyncio.Event()
        lose = b.farm.lose

        async def held_back(job_id: str, attempt: int, why: str) -> None:
            reached.set()
            await gate.wait()
            await lose(job_id, attempt, why)

        monkeypatch.setattr(b.farm, "lose", held_back)
        agent, job_id = await _taken_then_declined(a, b, on_a, token)
        try:
            async with asyncio.timeout(10):
                await reached.wait()
            await b.farm.cluster.deliver(agent_id)  # the row still says "claimed" here
        finally:
            gate.set()
        with pytest.raises(TimeoutError):
            await agent.expect(Assign, within=1.0)
        await _until(a, lambda: job_id in a.farm.queue)
        job = (await on_a.get(f"/api/v1/jobs/{job_id}")).json()
        assert (job["state"], job["attempt"]) == ("queued", 1)
        await agent.close()


async def test_a_webhook_delivery_left_by_a_stopped_replica_is_finished_by_another_once(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job ends on B (its agent's replica), B's first attempt is refused and B stops;
    A or C sends the retry from the shared outbox: the same delivery, once."""
    monkeypatch.setattr(outbox, "POLL_S", 0.3)  # what A and C would find in 10 s
    settings = _settings(tmp_path, postgres_url, webhooks_allow_private=True)
    key, token_file = await provision(settings, tmp_path)
    async with (
        receiving((503,)) as receiver,
        replicas(tmp_path, postgres_url, n=2, webhooks_allow_private=True) as (a, _c),
    ):
        async with running_coordinator(settings) as b:
            secret = await make_secret(b.farm.sessions)
            agent = ScriptedAgent(b.ws, token_file.read_text().strip())
            assert isinstance(await agent.connect(), Welcome)
            async with api_client(a, key) as on_a:
                body = {"prompt": "a bell", "steps": 8, "webhook_url": receiver.url}
                made = await on_a.post("/api/v1/jobs", json=body)
                assert made.status_code == 201, made.text
                job_id = made.json()["jobs"][0]["id"]
            assign = await agent.expect(Assign, within=10)
            await agent.upload(job_id, assign.jobs[0].attempt)
            assert (await agent.expect(ResultAck)).status == "stored"
            (first,) = await receiver.wait_for(1)
            await agent.close()
        _, second = await receiver.wait_for(2, within=15)
        await asyncio.sleep(1.5)  # a second sender would have sent by now
        async with a.farm.sessions() as db:
            left = list(await db.scalars(select(models.WebhookOutbox)))
            log = list(await db.scalars(select(models.WebhookDelivery)))
    assert len(receiver.requests) == 2 and left == []
    assert second.headers["shapefarm-delivery"] == first.headers["shapefarm-delivery"]
    assert verify(secret, second)["job"]["id"] == job_id
    assert [(entry.status_code, entry.attempts) for entry in log] == [(200, 2)]


async def test_the_admin_agents_page_of_any_replica_shows_uptime_and_held_jobs(
    tmp_path: Path, postgres_url: str
) -> None:
    """The agent's socket is B's; A's and C's pages show how long it has been connected
    and the job it runs, as B's does."""
    async with _agent_on_b(tmp_path, postgres_url) as ((a, b, c), key, token, agent):
        agent_id = token.split(".")[1]
        await _until(a, lambda: a.farm.online_elsewhere(agent_id))
        await _until(c, lambda: c.farm.online_elsewhere(agent_id))
        async with api_client(a, key) as on_a:
            job_id = await _submit(on_a, "a kettle")
            assert [s.job for s in (await agent.expect(Assign)).jobs] == [job_id]
        await asyncio.sleep(1.1)  # an uptime of at least a second
        row = re.compile(rf'<tr id="agent-{agent_id}".*?</tr>', re.S)
        for coord in (a, b, c):
            async with logged_in(coord, "root") as admin:
                page = (await admin.get("/admin/agents")).text
            found = row.search(page)
            assert found is not None, page[:500]
            cells = re.findall(r"<td[^>]*>(.*?)</td>", found.group(0), re.S)
            uptime, held = cells[5].strip(), cells[6]
            assert uptime not in ("—", ""), (coord.farm.cluster.replica, uptime)
            assert f'href="/jobs/{job_id}"' in held, (coord.farm.cluster.replica, held)
        await agent.close()
