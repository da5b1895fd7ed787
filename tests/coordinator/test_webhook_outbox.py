"""The webhook outbox: a job's end and its deliveries are kept in the database until
sent, so a stop, a crash or a second process neither loses nor doubles them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from coordinator.services import api_webhooks as webhooks
from coordinator.services import outbox
from coordinator.store import models
from protocol import Assign, ResultAck, Welcome
from tests.support.coordinators import (
    RunningCoordinator,
    api_client,
    make_settings,
    provision,
    running_coordinator,
    wait_for,
)
from tests.support.scripted_agent import ScriptedAgent
from tests.support.webhook_receiver import make_secret, receiving, verify


async def _secret(coordinator: RunningCoordinator) -> str:
    return await make_secret(coordinator.farm.sessions)


async def _outbox(coordinator: RunningCoordinator) -> list[models.WebhookOutbox]:
    async with coordinator.farm.sessions() as db:
        return list(await db.scalars(select(models.WebhookOutbox)))


async def _log(coordinator: RunningCoordinator) -> list[models.WebhookDelivery]:
    async with coordinator.farm.sessions() as db:
        return list(await db.scalars(select(models.WebhookDelivery)))


async def _metric(coordinator: RunningCoordinator, series: str) -> float:
    """One series of /metrics, scraped as a local Prometheus would."""
    async with httpx.AsyncClient(base_url=coordinator.http) as client:
        text = (await client.get("/metrics")).text
    (line,) = [line for line in text.splitlines() if line.startswith(series + " ")]
    return float(line.split()[-1])


async def _run_job(coordinator: RunningCoordinator, key: str, token: str, **body: Any) -> str:
    agent = ScriptedAgent(coordinator.ws, token)
    assert isinstance(await agent.connect(), Welcome)
    async with api_client(coordinator, key) as client:
        answer = await client.post("/api/v1/jobs", json={"prompt": "a cube", "steps": 8, **body})
        assert answer.status_code == 201, answer.text
        job_id: str = answer.json()["jobs"][0]["id"]
    assign = await agent.expect(Assign)
    await agent.upload(job_id, assign.jobs[0].attempt)
    assert (await agent.expect(ResultAck)).status == "stored"
    await agent.close()
    return job_id


async def test_outbox_a_job_ended_while_nothing_sends_is_told_after_the_restart(
    tmp_path: Path,
) -> None:
    """The end is written with the job's final state: a process that stops (or dies)
    before its sender ran loses nothing."""
    settings = make_settings(tmp_path / "data", webhooks_allow_private=True)
    async with receiving() as receiver:
        async with running_coordinator(settings) as coordinator:
            key, token_file = await provision(settings, tmp_path)
            token = token_file.read_text().strip()
            secret = await _secret(coordinator)
            await webhooks.of(coordinator.app.state).stop()  # as if it died before sending
            job_id = await _run_job(coordinator, key, token, webhook_url=receiver.url)
            (kept,) = await _outbox(coordinator)
            assert (kept.job_id, kept.url) == (job_id, None)  # the end, not yet a delivery
            assert await _metric(coordinator, 'shapefarm_outbox_rows{kind="webhook"}') == 1
            await asyncio.sleep(0.2)
            assert receiver.requests == []
        async with running_coordinator(settings) as coordinator:
            (got,) = await receiver.wait_for(1)
            async with asyncio.timeout(10):
                await webhooks.of(coordinator.app.state).wait_logged(1)
            assert await _outbox(coordinator) == []
            assert await _metric(coordinator, 'shapefarm_outbox_rows{kind="webhook"}') == 0
            (entry,) = await _log(coordinator)
    payload = verify(secret, got)
    assert payload["event"] == "job.finished" and payload["job"]["id"] == job_id
    assert (entry.job_id, entry.status_code, entry.attempts, entry.per_job) == (
        job_id, 200, 1, True,
    )  # fmt: skip


async def test_outbox_a_delivery_between_attempts_goes_on_after_a_restart(
    tmp_path: Path,
) -> None:
    """Same delivery id, body and attempt count on the other side of the restart."""
    settings = make_settings(tmp_path / "data", webhooks_allow_private=True)
    async with receiving((503,)) as receiver:
        async with running_coordinator(settings) as coordinator:
            webhooks.of(coordinator.app.state).backoff_s = 60.0  # stays between attempts
            key, token_file = await provision(settings, tmp_path)
            token = token_file.read_text().strip()
            secret = await _secret(coordinator)
            job_id = await _run_job(coordinator, key, token, webhook_url=receiver.url)
            (first,) = await receiver.wait_for(1)

            async def attempted() -> bool:
                rows = await _outbox(coordinator)
                return len(rows) == 1 and rows[0].attempts == 1

            await wait_for(attempted, 10, "the refused attempt to be written down")
            (waiting,) = await _outbox(coordinator)
            assert waiting.claim is None and waiting.delivery_id is not None
            assert waiting.next_at > waiting.created_at + 50
        async with running_coordinator(settings) as coordinator:
            hooks = webhooks.of(coordinator.app.state)
            assert (await _outbox(coordinator))[0].attempts == 1
            # Due now (the test's stand-in for waiting out the backoff).
            row_id = waiting.id
            await coordinator.farm.writer.run(
                lambda db: db.execute(
                    models.WebhookOutbox.__table__.update()
                    .where(models.WebhookOutbox.id == row_id)
                    .values(next_at=0.0)
                )
            )
            hooks.pump.wake()
            _, second = await receiver.wait_for(2)
            async with asyncio.timeout(10):
                await hooks.wait_logged(1)
            assert await _outbox(coordinator) == []
            (entry,) = await _log(coordinator)
    assert second.headers["shapefarm-delivery"] == first.headers["shapefarm-delivery"]
    assert second.body == first.body and verify(secret, second)["job"]["id"] == job_id
    assert (entry.status_code, entry.attempts) == (200, 2)


async def test_outbox_claims_are_fenced_between_processes(tmp_path: Path) -> None:
    """Two processes on one database: a row claimed by one is not the other's until the
    claim runs out; then the first one's late answer changes nothing."""
    settings = make_settings(tmp_path / "data", webhooks_allow_private=True)
    async with receiving() as receiver, running_coordinator(settings) as coordinator:
        hooks = webhooks.of(coordinator.app.state)
        key, token_file = await provision(settings, tmp_path)
        token = token_file.read_text().strip()
        await _secret(coordinator)
        await hooks.stop()  # this test claims by hand
        job_id = await _run_job(coordinator, key, token, webhook_url=receiver.url)
        writer, now = coordinator.farm.writer, coordinator.farm.clock()

        def claim(name: str, at: float) -> Any:
            return writer.run(
                lambda db: outbox.claim_due(
                    db, webhooks._DUE, webhooks.ROWS, at, name, 10, webhooks.LEASE_S
                )
            )

        (row,), due = await claim("first", now)
        assert row.job_id == job_id and due is None  # nothing else waits unclaimed
        assert (await claim("second", now + 1))[0] == []  # held by the first
        (taken,), _ = await claim("second", now + webhooks.LEASE_S + 1)  # the first is gone
        assert taken.id == row.id
        late = await writer.run(
            lambda db: db.execute(webhooks.ROWS.done, outbox.mine(row.id, "first")).rowcount
        )
        assert late == 0  # the first process's answer does not remove the second's work
        assert [r.claim for r in await _outbox(coordinator)] == ["second"]


@contextlib.asynccontextmanager
async def _silent_receiver() -> AsyncIterator[tuple[str, list[float]]]:
    """A receiver that accepts and reads but never answers (each attempt times out)."""
    seen: list[float] = []
    held: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(time.monotonic())
        held.append(writer)
        await reader.read(65536)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook", seen
    finally:
        for writer in held:
            writer.close()
        server.close()


async def test_outbox_a_key_whose_receiver_never_answers_holds_one_sender(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mallory's URL swallows requests; her deliveries take turns on one sender, so
    alice's is sent at once instead of waiting for her timeouts."""
    monkeypatch.setattr(webhooks, "WORKERS", 2)
    settings = make_settings(tmp_path / "data", webhooks_allow_private=True)
    async with (
        _silent_receiver() as (black_hole, attempts),
        receiving() as receiver,
        running_coordinator(settings) as coordinator,
    ):
        hooks = webhooks.of(coordinator.app.state)
        hooks.timeout_s = 3.0
        await hooks.stop()
        await hooks.start()  # with the shorter timeout
        key, token_file = await provision(settings, tmp_path)
        mallory_key, mallory_token = await provision(settings, tmp_path, "mallory")
        await make_secret(coordinator.farm.sessions)
        await make_secret(coordinator.farm.sessions, "mallory")
        await hooks.stop()  # her three ends wait together, as a burst would
        for _ in range(3):
            await _run_job(
                coordinator, mallory_key, mallory_token.read_text().strip(), webhook_url=black_hole
            )
        job_id = await _run_job(
            coordinator, key, token_file.read_text().strip(), webhook_url=receiver.url
        )
        await hooks.start()
        started = time.monotonic()
        (got,) = await receiver.wait_for(1, within=10)
        waited = time.monotonic() - started
        assert len(attempts) == 1  # one of hers at a time, the others wait their turn
    assert json.loads(got.body)["job"]["id"] == job_id
    assert waited < 2.5, f"alice's delivery waited {waited:.1f} s behind mallory's"


async def test_outbox_a_job_end_that_cannot_be_read_for_a_moment_is_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading the job for its deliveries fails once (the database, for a moment): the
    end stays in the outbox and is told on the next try, not dropped."""
    settings = make_settings(tmp_path / "data", webhooks_allow_private=True)
    async with receiving() as receiver, running_coordinator(settings) as coordinator:
        hooks = webhooks.of(coordinator.app.state)
        hooks.backoff_s = 0.05
        key, token_file = await provision(settings, tmp_path)
        await make_secret(coordinator.farm.sessions)
        real = hooks._deliveries_for
        failures = []

        async def flaky(job_id: str, ended_at: float) -> list[webhooks.Delivery]:
            if not failures:
                failures.append(job_id)
                raise OSError("disk I/O error")
            return await real(job_id, ended_at)

        monkeypatch.setattr(hooks, "_deliveries_for", flaky)
        job_id = await _run_job(
            coordinator, key, token_file.read_text().strip(), webhook_url=receiver.url
        )
        (got,) = await receiver.wait_for(1)
        async with asyncio.timeout(10):
            await hooks.wait_logged(1)
        assert failures == [job_id] and json.loads(got.body)["job"]["id"] == job_id
        assert await _outbox(coordinator) == []


async def test_outbox_a_claim_reads_a_bounded_window_of_a_large_backlog(tmp_path: Path) -> None:
    """Ten thousand deliveries of 100 keys wait, four keys have an attempt in flight: a
    claim takes one row per idle key, none of the busy ones, the earliest first."""
    settings = make_settings(tmp_path / "data")
    async with running_coordinator(settings) as coordinator:
        await webhooks.of(coordinator.app.state).stop()  # this test claims by hand
        await provision(settings, tmp_path)

        def fill(db: Any) -> None:
            user_id = db.execute(select(models.User.id)).scalar_one()
            db.execute(
                models.ApiKey.__table__.insert(),
                [
                    {"id": f"k{k:03d}", "user_id": user_id, "name": "n", "key_hash": "h",
                     "created_at": 0.0, "webhook_url": "http://x/", "webhook_secret": "s"}
                    for k in range(100)
                ],
            )  # fmt: skip
            db.execute(
                models.Job.__table__.insert(),
                [
                    {"id": f"j{i:05d}", "user_id": user_id, "prompt": "p", "seed": 1,
                     "guidance": 15.0, "steps": 8, "state": "succeeded", "attempt": 1,
                     "attempt_base": 0, "created_at": 0.0, "enqueued_at": 0.0,
                     "model": "shap-e", "kind": "text", "public": False, "hidden": False}
                    for i in range(10_000)
                ],
            )  # fmt: skip
            db.execute(
                models.WebhookOutbox.__table__.insert(),
                [
                    {"job_id": f"j{i:05d}", "api_key_id": f"k{i % 100:03d}", "url": "http://x/",
                     "per_job": False, "delivery_id": f"d{i}", "body": "{}", "attempts": 0,
                     "created_at": float(i), "next_at": float(i),
                     "claim": "other" if i < 4 else None,
                     "claimed_until": 1e12 if i < 4 else 0.0}
                    for i in range(10_000)
                ],
            )  # fmt: skip

        await coordinator.farm.writer.run(fill)
        taken, _ = await coordinator.farm.writer.run(
            lambda db: outbox.claim_due(
                db, webhooks._DUE, webhooks.ROWS, 1e9, "mine", 8, webhooks.LEASE_S
            )
        )
        assert [row.api_key_id for row in taken] == [f"k{k:03d}" for k in range(4, 12)]
        assert [row.job_id for row in taken] == [f"j{i:05d}" for i in range(4, 12)]
