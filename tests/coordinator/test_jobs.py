"""Job services over real sockets: admission and insert are one step per user."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from coordinator.cli.admin_cli import create_api_key, create_user
from tests.support.coordinators import PASSWORD, make_settings, running_coordinator


async def test_jobs_parallel_submissions_queue_exactly_what_the_cap_allows(tmp_path: Path) -> None:
    # Free tier: 5 jobs waiting at most, 2 variants a request. No agent is connected,
    # so every admitted job stays queued.
    settings = make_settings(tmp_path)
    await create_user(settings, "alice", PASSWORD, None, is_admin=False)
    key = await create_api_key(settings, "alice", "tests")
    async with (
        running_coordinator(settings) as coordinator,
        httpx.AsyncClient(
            base_url=coordinator.http,
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
            limits=httpx.Limits(max_connections=20),
        ) as api,
    ):
        tier = coordinator.farm.tiers["free"]
        allowed = tier.max_queued // 2  # whole 2-variant requests that fit: 2 (4 jobs)
        answers = await asyncio.gather(
            *(
                api.post("/api/v1/jobs", json={"prompt": f"a cup {i}", "variants": 2})
                for i in range(20)
            )
        )
        codes = sorted(answer.status_code for answer in answers)
        assert codes == [201] * allowed + [429] * (20 - allowed), codes
        refused = [a.json()["error"] for a in answers if a.status_code == 429]
        assert all(why["code"] == "quota_exceeded" for why in refused), refused[:3]
        assert all("Too many jobs waiting" in why["message"] for why in refused), refused[:3]
        listed = (await api.get("/api/v1/jobs", params={"limit": 100})).json()
        assert listed["total"] == 2 * allowed
        assert len(coordinator.farm.queue) == 2 * allowed
