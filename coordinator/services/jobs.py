"""Job services shared by the HTML views and the JSON API."""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
from collections import deque
from dataclasses import dataclass

from sqlalchemy import delete as sa_delete
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

import scheduler
from coordinator.farm.engine import Farm
from coordinator.farm.live import DailyUsage
from coordinator.meshes.convert import FORMATS
from coordinator.store import models
from coordinator.store.modelfiles import ModelFile
from protocol.messages import Cancel
from scheduler.lifecycle import JobEvent, JobState, can
from scheduler.snapshot import DEFAULT_MODEL

MAX_PROMPT = 500
DAY_S = 86400.0


class JobRequestError(ValueError):
    """A submission that cannot be accepted; the message is shown to the user."""


@dataclass(frozen=True)
class JobRequest:
    prompt: str
    seed: int | None = None
    guidance: float = 15.0
    steps: int = 64
    variants: int = 1

    @classmethod
    def parse(cls, data: dict[str, object]) -> JobRequest:
        """Validate raw form/JSON values; every problem becomes a clear message."""
        prompt = str(data.get("prompt") or "").strip()
        if not prompt:
            raise JobRequestError("Describe the object you want, e.g. 'a red chair'.")
        if len(prompt) > MAX_PROMPT:
            raise JobRequestError(
                f"The prompt is {len(prompt)} characters; the limit is {MAX_PROMPT}."
            )
        if any(ord(c) < 32 and c not in "\t" for c in prompt):
            raise JobRequestError("The prompt contains control characters.")
        return cls(
            prompt=prompt,
            seed=_number(data, "seed", int, None, 0, 2**32 - 1),
            guidance=_number(data, "guidance", float, 15.0, 0.0, 100.0),
            steps=_number(data, "steps", int, 64, 1, 1024),
            variants=_number(data, "variants", int, 1, 1, 16),
        )


def _number(
    data: dict[str, object], name: str, kind: type, default: object, low: float, high: float
) -> object:
    raw = data.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw) if not isinstance(raw, bool) else None
    except (TypeError, ValueError):
        value = None
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        raise JobRequestError(f"{name.capitalize()} must be a number.")
    if not low <= value <= high:
        raise JobRequestError(f"{name.capitalize()} must be between {low:g} and {high:g}.")
    return value


async def usage_since(db: AsyncSession, user_ids: list[int], since: float) -> dict[int, int]:
    """Jobs each user submitted since ``since``, counting deleted ones too:
    deleting a job must not give its quota back."""
    counts: dict[int, int] = dict.fromkeys(user_ids, 0)
    for table in (models.Job, models.DeletedJob):
        rows = await db.execute(
            select(table.user_id, func.count())
            .where(table.user_id.in_(user_ids), table.created_at >= since)
            .group_by(table.user_id)
        )
        for user_id, count in rows.all():
            counts[user_id] += int(count)
    return counts


async def usage_today(db: AsyncSession, user_id: int, now: float) -> int:
    return (await usage_since(db, [user_id], now - DAY_S))[user_id]


async def _daily_usage(farm: Farm, db: AsyncSession, user_id: int, now: float) -> DailyUsage:
    """The user's last-day submissions: read from the database once, then kept in memory."""
    usage = farm.usage.get(user_id)
    if usage is None:
        loaded = DailyUsage(DAY_S)
        for table in (models.Job, models.DeletedJob):
            rows = await db.execute(
                select(table.created_at, func.count())
                .where(table.user_id == user_id, table.created_at >= now - DAY_S)
                .group_by(table.created_at)
            )
            for at, count in rows.all():
                loaded.entries.append((at, int(count)))
        loaded.entries = deque(sorted(loaded.entries))
        loaded.total = sum(count for _, count in loaded.entries)
        # Another request may have loaded it meanwhile (and counted its jobs): keep that one.
        usage = farm.usage.setdefault(user_id, loaded)
    return usage


async def _admit_and_queue(
    farm: Farm, db: AsyncSession, user: models.User, req: JobRequest, api_key_id: str | None
) -> list[models.Job]:
    snap = farm.refresh_user(user)
    tier = farm.tiers[snap.tier]
    now = farm.clock()
    usage = await _daily_usage(farm, db, user.id, now)
    queued = sum(1 for job in farm.queue.values() if job.user_id == snap.id)
    refusal = scheduler.check_submit(
        tier, usage.count(now), queued, req.steps, req.guidance, req.variants
    )
    if refusal:
        raise JobRequestError(refusal)
    base_seed = req.seed if req.seed is not None else secrets.randbelow(2**32)
    jobs = [
        models.Job(
            id=secrets.token_urlsafe(12),
            user_id=user.id,
            prompt=req.prompt,
            seed=(base_seed + i) % 2**32,
            guidance=req.guidance,
            steps=req.steps,
            model=DEFAULT_MODEL,
            state=JobState.QUEUED,
            attempt=0,
            attempt_base=0,
            priority=0,
            agent_id=None,
            public=False,
            error=None,
            created_at=now,
            enqueued_at=now + i * 1e-6,
            started_at=None,
            finished_at=None,
            lease_expires_at=None,
            api_key_id=api_key_id,
        )
        for i in range(req.variants)
    ]
    usage.add(now, len(jobs))
    rows = [{c.key: getattr(job, c.key) for c in models.Job.__table__.c} for job in jobs]
    try:
        await farm.writer.run(lambda conn: conn.execute(insert(models.Job), rows).rowcount)
    except BaseException:
        usage.add(now, -len(jobs))
        raise
    for job in jobs:
        farm.enqueue(job)
    return jobs


async def submit(
    farm: Farm,
    db: AsyncSession,
    user: models.User,
    req: JobRequest,
    api_key_id: str | None = None,
) -> list[models.Job]:
    """Admit (tier limits, quota) and queue ``req.variants`` jobs; returns them.

    ``api_key_id``: the key an API submission came with (its webhook hears the end)."""
    # One submission of a user at a time, from the admission check until its jobs are
    # queued: the insert awaits the database, and parallel requests would otherwise all
    # pass the check against the same queue count.
    async with farm.submitting(user.id):
        jobs = await _admit_and_queue(farm, db, user, req, api_key_id)
    # Let the dispatcher plan before the caller estimates the queue: the new job may
    # leave it right away, and the estimate (a pass over the whole queue) then waits
    # on the event loop behind the assignment instead of in front of it.
    await asyncio.sleep(0)
    return jobs


async def get_visible(
    db: AsyncSession, viewer: models.User | None, job_id: str
) -> models.Job | None:
    """The job if ``viewer`` may see it (owner, admin, or public), else None."""
    job = await db.get(models.Job, job_id)
    return job if job is not None and can_view(viewer, job) else None


def can_view(viewer: models.User | None, job: models.Job) -> bool:
    """Whether ``viewer`` may see ``job`` now: its owner, an admin, or anyone if public.

    Live streams ask again on every event: a job made private stops streaming."""
    return job.public or (viewer is not None and (viewer.is_admin or viewer.id == job.user_id))


async def get_owned(db: AsyncSession, user: models.User, job_id: str) -> models.Job | None:
    """The job if ``user`` may change it (owner or admin)."""
    job = await db.get(models.Job, job_id)
    if job is None or not (user.is_admin or job.user_id == user.id):
        return None
    return job


async def result_of(db: AsyncSession, job_id: str) -> models.Result | None:
    return await db.get(models.Result, job_id)


async def list_jobs(
    db: AsyncSession,
    user: models.User,
    *,
    limit: int = 20,
    offset: int = 0,
    query: str = "",
    state: str = "",
) -> tuple[list[models.Job], int]:
    where = [models.Job.user_id == user.id]
    if query:
        escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.append(models.Job.prompt.ilike(f"%{escaped}%", escape="\\"))
    if state:
        where.append(models.Job.state == state)
    total = await db.scalar(select(func.count()).select_from(models.Job).where(*where))
    rows = await db.scalars(
        select(models.Job)
        .where(*where)
        .order_by(models.Job.created_at.desc(), models.Job.id)
        .limit(limit)
        .offset(offset)
    )
    return list(rows), int(total or 0)


async def cancel(
    farm: Farm, db: AsyncSession, job: models.Job, why: str = "cancelled by user"
) -> bool:
    """Cancel a queued or running job; False if it had already finished."""
    state = JobState(job.state)
    if not can(state, JobEvent.CANCEL):
        return False
    agent_id, attempt = job.agent_id, job.attempt
    job.state = JobState.CANCELLED
    job.finished_at = farm.clock()
    job.error = why
    job.agent_id = None
    job.lease_expires_at = None
    await db.commit()
    conn = farm.agents.get(agent_id) if agent_id else None
    if conn is not None and conn.session.is_held(job.id, attempt):
        # A dead agent is handled by the lease machinery; nothing to do here.
        with contextlib.suppress(Exception):
            await conn.send(Cancel(job=job.id, attempt=attempt, reason=why))
    farm.settle(job.id)
    return True


async def export_model(farm: Farm, job: models.Job, fmt: str) -> ModelFile:
    """The stored model as ``fmt``, open for streaming (LookupError: no such format/file).

    Conversions are cached, single-flight and limited: see ``coordinator.modelfiles``."""
    return await farm.models.open(job.id, fmt)


def result_json(job_id: str, result: models.Result) -> dict[str, object]:
    """A stored model as the API and webhooks describe it, with its download paths."""
    return {
        "sha256": result.glb_sha256,
        "size": result.glb_size,
        "vertices": result.vertices,
        "faces": result.faces,
        "seconds": result.seconds,
        "agent_id": result.agent_id,
        "downloads": {fmt: f"/api/v1/jobs/{job_id}/download/{fmt}" for fmt in FORMATS},
    }


def describe_progress(
    farm: Farm, job: models.Job, positions: dict[str, scheduler.QueueEstimate] | None = None
) -> dict[str, object]:
    """The live view of a job for templates and the API."""
    info: dict[str, object] = {"state": job.state}
    live = farm.progress.get(job.id)
    if live is not None:
        info.update(stage=live.stage, step=live.step, total=live.total, eta_s=live.eta_s)
    if job.state == JobState.QUEUED:
        estimate = (positions if positions is not None else farm.positions()).get(job.id)
        if estimate is not None:
            info.update(position=estimate.position, eta_s=estimate.eta_s)
        info["agents_online"] = sum(1 for c in farm.agents.values() if c.approved)
    return info


async def delete(farm: Farm, db: AsyncSession, job: models.Job) -> None:
    """Cancel the job if it is still live, then remove its rows and files."""
    await cancel(farm, db, job, "deleted by its owner")
    now = farm.clock()
    # Core statements: the ORM would try to load the result relationship (lazy="raise").
    await db.execute(sa_delete(models.Result).where(models.Result.job_id == job.id))
    await db.execute(sa_delete(models.Job).where(models.Job.id == job.id))
    await db.execute(sa_delete(models.DeletedJob).where(models.DeletedJob.created_at < now - DAY_S))
    db.add(
        models.DeletedJob(
            job_id=job.id, user_id=job.user_id, created_at=job.created_at, deleted_at=now
        )
    )
    await db.commit()
    await asyncio.to_thread(farm.store.delete, job.id)
    farm.settle(job.id)


async def set_visibility(farm: Farm, db: AsyncSession, job: models.Job, public: bool) -> None:
    job.public = public
    await db.commit()
    # Open streams re-check who may see the job when it changes (see pages.job_events).
    farm.publish(job.id)


def parse_public(raw: object) -> bool:
    """A visibility flag from a form field or JSON; anything unclear is an error."""
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.lower() in {"public", "true", "1", "on", "yes"}:
        return True
    if isinstance(raw, str) and raw.lower() in {"private", "false", "0", "off", "no"}:
        return False
    raise JobRequestError("Visibility must be 'public' or 'private' (or true/false).")


async def agent_name(db: AsyncSession, agent_id: str | None) -> str | None:
    """The display name of the agent that made a model (it may be gone since)."""
    if agent_id is None:
        return None
    agent = await db.get(models.Agent, agent_id)
    return agent.name if agent is not None else None
