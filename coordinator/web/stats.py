"""Farm-wide numbers: the public /stats page, the admin dashboard and /metrics share them.

Only aggregates leave this module; nothing here names a user or a prompt.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import scheduler
from coordinator.farm.engine import Farm
from coordinator.request_context import farm_of
from coordinator.store import models
from coordinator.web.base import current_user, is_htmx, render
from scheduler.lifecycle import JobState

HOUR_S = 3600.0
DAY_S = 86400.0
WAIT_SAMPLE = 20_000  # newest started jobs used for the wait percentiles


@dataclass(frozen=True)
class Totals:
    models_made: int
    gpu_seconds: float
    agents_online: int
    queue_length: int
    running: int
    volunteers: int
    made_last_day: int


@dataclass(frozen=True)
class TierWait:
    tier: str
    queued: int
    p50_s: float | None
    p95_s: float | None
    samples: int


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0–100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def queue_by_tier(farm: Farm) -> dict[str, int]:
    """Queued jobs per effective tier, every tier listed (in rank order), zeros included."""
    return farm.queued_count_by_tier()


async def jobs_by_state(db: AsyncSession) -> dict[str, int]:
    rows = await db.execute(select(models.Job.state, func.count()).group_by(models.Job.state))
    found = dict(rows.all())
    return {state.value: int(found.get(state.value, 0)) for state in JobState}


async def totals(farm: Farm, db: AsyncSession) -> Totals:
    now = farm.clock()
    made = await db.scalar(
        select(func.count()).select_from(models.Job).where(models.Job.state == JobState.SUCCEEDED)
    )
    made_day = await db.scalar(
        select(func.count())
        .select_from(models.Job)
        .where(models.Job.state == JobState.SUCCEEDED, models.Job.finished_at >= now - DAY_S)
    )
    gpu = await db.scalar(select(func.coalesce(func.sum(models.Agent.gpu_seconds), 0.0)))
    volunteers = await db.scalar(
        select(func.count(func.distinct(models.Agent.owner_id))).where(models.Agent.jobs_done > 0)
    )
    return Totals(
        models_made=int(made or 0),
        gpu_seconds=float(gpu or 0.0),
        agents_online=farm.agents_online(),
        queue_length=len(farm.queue),
        running=len(farm.leases),
        volunteers=int(volunteers or 0),
        made_last_day=int(made_day or 0),
    )


async def jobs_last_hour(db: AsyncSession, now: float) -> int:
    count = await db.scalar(
        select(func.count())
        .select_from(models.Job)
        .where(models.Job.state == JobState.SUCCEEDED, models.Job.finished_at >= now - HOUR_S)
    )
    return int(count or 0)


async def waits_by_tier(farm: Farm, db: AsyncSession, window_s: float = DAY_S) -> list[TierWait]:
    """p50/p95 of (started − created) per tier over jobs started in the window.

    The tier is the owner's tier now (jobs do not record theirs), which is
    what an admin tuning tiers wants to see.
    """
    now = farm.clock()
    rows = await db.execute(
        select(models.Job.started_at - models.Job.created_at, models.User)
        .join(models.User, models.User.id == models.Job.user_id)
        .where(models.Job.started_at.is_not(None), models.Job.started_at >= now - window_s)
        .order_by(models.Job.started_at.desc())
        .limit(WAIT_SAMPLE)
    )
    waits: dict[str, list[float]] = defaultdict(list)
    for wait, user in rows:
        name = farm.tier_of(user, now)
        waits[name if name in farm.tiers else scheduler.FREE_TIER].append(max(0.0, wait or 0.0))
    return [
        TierWait(
            tier,
            queued,
            percentile(waits[tier], 50),
            percentile(waits[tier], 95),
            len(waits[tier]),
        )
        for tier, queued in queue_by_tier(farm).items()
    ]


# -- the public page ---------------------------------------------------------


async def stats_page(request: Request) -> Response:
    farm = farm_of(request)
    async with farm.sessions() as db:
        user = await current_user(request, db)
        numbers = await totals(farm, db)
    template = "_partials/stats_numbers.html" if is_htmx(request) else "stats.html"
    return render(request, template, user, totals=numbers)


ROUTES = [Route("/stats", stats_page)]
