"""The coordinator on PostgreSQL (asyncpg): migrations, dispatch, results, restart.

Runs a throwaway PostgreSQL cluster from Debian's packages on 127.0.0.1; skipped
with the reason when the server binaries are not installed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from coordinator.services import moderation
from coordinator.store import models
from tests.support.coordinators import (
    PASSWORD,
    api_client,
    make_settings,
    provision,
    running_coordinator,
    start_agent,
    stop_agent,
    wait_for,
)
from tests.support.sockclient import Browser, sent_to_login
from tests.support.ui import create_job

pytestmark = pytest.mark.slow


async def test_postgres_jobs_run_end_to_end_and_survive_restart(
    tmp_path: Path, postgres_url: str
) -> None:
    settings = make_settings(tmp_path / "data", database_url=postgres_url)
    key, token_file = await provision(settings, tmp_path)
    async with running_coordinator(settings) as coord, api_client(coord, key) as client:
        agent = start_agent(coord.ws, token_file, tmp_path / "spool", model="instant")
        try:
            created = (
                await client.post(
                    "/api/v1/jobs",
                    # Seeds past int32: a seed is 0 .. 2**32-1, so the column must be wide.
                    json={"prompt": "a teapot", "steps": 8, "variants": 2, "seed": 4_000_000_000},
                )
            ).json()["jobs"]
            ids = [job["id"] for job in created]

            async def done() -> bool:
                states = [(await client.get(f"/api/v1/jobs/{i}")).json()["state"] for i in ids]
                return all(state == "succeeded" for state in states)

            await wait_for(done, 60, "both variants to succeed on PostgreSQL")
        finally:
            exit_code = await stop_agent(agent)
        assert exit_code == 0
    # A second coordinator on the same database sees everything the first stored.
    async with running_coordinator(settings) as coord, api_client(coord, key) as client:
        listing = (await client.get("/api/v1/jobs")).json()
        assert listing["total"] == 2
        assert {job["state"] for job in listing["jobs"]} == {"succeeded"}
        glb = await client.get(f"/api/v1/jobs/{ids[0]}/download/glb")
        assert glb.status_code == 200 and glb.content[:4] == b"glTF"


async def test_postgres_sessions_end_and_ids_are_never_reused(
    tmp_path: Path, postgres_url: str
) -> None:
    settings = make_settings(tmp_path / "data", database_url=postgres_url)
    async with running_coordinator(settings) as coord, Browser(coord) as alice:
        await alice.register("alice")
        kept = alice.cookies()
        assert (await alice.post("/logout")).status_code == 303
        async with Browser(coord, cookies=kept) as thief:
            assert sent_to_login(await thief.get("/profile"))
        assert (await alice.login("alice")).status_code == 303
        kept = alice.cookies()
        deleted = await alice.post("/profile/delete", {"password": PASSWORD}, page="/profile")
        assert deleted.status_code == 303
        async with Browser(coord) as bob, Browser(coord, cookies=kept) as ghost:
            await bob.register("bob")
            assert sent_to_login(await ghost.get("/profile"))
        async with coord.farm.sessions() as db:
            ids = list(await db.scalars(select(models.User.id)))
            sessions = await db.scalar(select(func.count()).select_from(models.LoginSession))
        assert ids == [2] and sessions == 1  # bob's id is new; alice's sessions went with her


async def test_postgres_one_use_voucher_redeemed_once_under_concurrency(
    tmp_path: Path, postgres_url: str
) -> None:
    from tests.support.billing import new_voucher, redeem_at_once

    settings = make_settings(
        tmp_path / "data", database_url=postgres_url, auth_rate_per_minute=1000
    )
    async with running_coordinator(settings) as coord:
        answers = await redeem_at_once(coord, await new_voucher(coord, "plus"), 8)
        assert sorted(a.status_code for a in answers) == [200] + [400] * 7
        assert all("used up" in a.text for a in answers if a.status_code == 400)
        async with coord.farm.sessions() as db:
            uses = await db.scalar(select(models.Voucher.uses))
            rows = await db.scalar(select(func.count()).select_from(models.VoucherRedemption))
        assert (uses, rows) == (1, 1)


async def test_postgres_search_folds_cyrillic_case(tmp_path: Path, postgres_url: str) -> None:
    settings = make_settings(tmp_path / "data", database_url=postgres_url)
    key, _ = await provision(settings, tmp_path)
    async with running_coordinator(settings) as coord, api_client(coord, key) as client:
        for prompt in ("красный стул", "a blue table"):
            made = await client.post("/api/v1/jobs", json={"prompt": prompt, "steps": 8})
            assert made.status_code == 201, made.text
        found = (await client.get("/api/v1/jobs", params={"q": "СТУЛ"})).json()
        assert [job["prompt"] for job in found["jobs"]] == ["красный стул"]
        found = (await client.get("/api/v1/jobs", params={"q": "Красный СТ"})).json()
        assert found["total"] == 1


async def test_postgres_gallery_likes_reports_and_hiding(tmp_path: Path, postgres_url: str) -> None:
    settings = make_settings(tmp_path / "data", database_url=postgres_url)
    async with running_coordinator(settings) as coord, Browser(coord) as alice:
        await alice.register("alice")
        job = await create_job(coord.farm, 1, "Красный СТУЛ", public=True)
        async with Browser(coord) as bob:
            await bob.register("bob")
            for expected in ("1", "0", "1"):  # a toggle, once per user
                liked = await bob.post(f"/jobs/{job}/like", page=f"/jobs/{job}")
                assert liked.status_code == 303
                page = (await bob.get(f"/jobs/{job}")).text
                assert f'<span class="like-count">{expected}</span>' in page
            reported = await bob.post(
                f"/jobs/{job}/report", {"reason": "spam"}, page=f"/jobs/{job}"
            )
            assert reported.status_code == 303
        explore = (await alice.get("/explore?q=стул&order=liked")).text
        assert f'id="card-{job}"' in explore
        async with coord.farm.sessions() as db:
            await moderation.set_hidden(
                coord.farm, db, await db.get(models.User, 1), await db.get(models.Job, job), True
            )
            opened = await db.scalar(
                select(func.count())
                .select_from(models.Report)
                .where(models.Report.resolved_at.is_(None))
            )
        assert opened == 0
        async with Browser(coord) as visitor:
            assert f'id="card-{job}"' not in (await visitor.get("/explore")).text
