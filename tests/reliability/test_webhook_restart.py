"""The coordinator is SIGKILLed between two attempts of a webhook delivery and started
again: the receiver still gets the job's end, once more with the same delivery id."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest

from coordinator.store.db import make_engine, make_sessionmaker
from tests.support.coordinators import make_settings, provision, start_agent, stop_agent, wait_for
from tests.support.procs import CoordinatorProcess, coordinator_env, free_port
from tests.support.webhook_receiver import make_secret, receiving, verify

pytestmark = pytest.mark.slow

SETTINGS = {"webhooks_allow_private": "true"}


async def _make_secret(db_url: str) -> str:
    engine = make_engine(db_url)
    try:
        return await make_secret(make_sessionmaker(engine))
    finally:
        await engine.dispose()


async def test_webhook_delivery_survives_a_sigkill(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = make_settings(data, webhooks_allow_private=True)
    key, token_file = await provision(settings, tmp_path)
    secret = await _make_secret(settings.db_url)
    coord = CoordinatorProcess(
        data, free_port(), coordinator_env(**SETTINGS), tmp_path / "coordinator.log"
    )
    agent = None
    async with receiving((503,)) as receiver:
        await coord.start()
        try:
            async with httpx.AsyncClient(
                base_url=coord.http, headers={"Authorization": f"Bearer {key}"}, timeout=10
            ) as client:
                agent = start_agent(coord.ws, token_file, tmp_path / "spool", model="instant")
                body = {"prompt": "a crash", "steps": 2, "webhook_url": receiver.url}
                answer = await client.post("/api/v1/jobs", json=body)
                assert answer.status_code == 201, answer.text
                job_id = answer.json()["jobs"][0]["id"]
                (first,) = await receiver.wait_for(1, within=60)  # answered 503
                coord.stop(kill=True)  # before the retry a second later
                await coord.start()
                _, second = await receiver.wait_for(2, within=30)

                async def logged() -> bool:
                    with sqlite3.connect(data / "shapefarm.db") as db:
                        return bool(db.execute("SELECT 1 FROM webhook_deliveries").fetchone())

                await wait_for(logged, 10, "the delivery to be logged")
        finally:
            if agent is not None:
                await stop_agent(agent)
            coord.stop()
    assert second.headers["shapefarm-delivery"] == first.headers["shapefarm-delivery"]
    assert verify(secret, second)["job"]["id"] == job_id
    assert verify(secret, second)["job"]["state"] == "succeeded"
    with sqlite3.connect(data / "shapefarm.db") as db:
        assert db.execute("SELECT COUNT(*) FROM webhook_outbox").fetchone() == (0,)
        ((status, attempts),) = db.execute("SELECT status_code, attempts FROM webhook_deliveries")
    # 2: the failed attempt was written down before the kill; 1: the kill came first.
    assert status == 200 and attempts in (1, 2)
    assert len(receiver.requests) == 2  # nothing more once it was answered
