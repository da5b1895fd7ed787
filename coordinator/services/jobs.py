"""Job services shared by the HTML views and the JSON API."""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import delete as sa_delete
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

import scheduler
from coordinator import labels
from coordinator.farm import lifecycle
from coordinator.farm.engine import Farm
from coordinator.farm.live import DailyUsage
from coordinator.i18n import N_, gettext
from coordinator.meshes.convert import FORMATS
from coordinator.store import models
from coordinator.store.modelfiles import ModelFile
from protocol import limits
from protocol.messages import Cancel
from scheduler.lifecycle import JobEvent, JobState, can
from scheduler.snapshot import DEFAULT_MODEL

DAY_S = 86400.0


class JobRequestError(ValueError):
    """A submission that cannot be accepted; the message is shown to the user."""


class QuotaExceededError(JobRequestError):
    """A valid submission refused for now: the daily quota or the queued cap is reached."""


@dataclass(frozen=True)
class JobRequest:
    """One submission, within :mod:`protocol.limits` (the bounds agents run)."""

    prompt: str
    seed: int | None = None
    guidance: float = limits.DEFAULT_GUIDANCE
    steps: int = limits.DEFAULT_STEPS
    variants: int = limits.DEFAULT_VARIANTS

    @classmethod
    def parse(cls, data: Mapping[str, object]) -> JobRequest:
        """Validate raw form/JSON values; every problem becomes a clear message."""
        prompt = str(data.get("prompt") or "").strip()
        if not prompt:
            raise JobRequestError(gettext("Describe the object you want, e.g. 'a red chair'."))
        if len(prompt) > limits.MAX_PROMPT_CHARS:
            raise JobRequestError(
                gettext("The prompt is %(length)s characters; the limit is %(max)s.")
                % {"length": len(prompt), "max": limits.MAX_PROMPT_CHARS}
            )
        if any(ord(c) < 32 and c not in "\t" for c in prompt):
            raise JobRequestError(gettext("The prompt contains control characters."))
        return cls(
            prompt=prompt,
            seed=_number(data, "seed", int, None, limits.MIN_SEED, limits.MAX_SEED),
            guidance=_number(
                data, "guidance", float, cls.guidance, limits.MIN_GUIDANCE, limits.MAX_GUIDANCE
            ),
            steps=_number(data, "steps", int, cls.steps, limits.MIN_STEPS, limits.MAX_STEPS),
            variants=_number(
                data, "variants", int, cls.variants, limits.MIN_VARIANTS, limits.MAX_VARIANTS
            ),
        )


# The form fields' names, as error messages start with them (translated when shown).
FIELD_NAMES = {
    "seed": N_("Seed"),
    "guidance": N_("Guidance"),
    "steps": N_("Steps"),
    "variants": N_("Variants"),
}


def refusal_text(refusal: scheduler.Refusal) -> str:
    """The scheduler's refusal in the request's language (English for the API)."""
    params = dict(refusal.params)
    if "tier" in params:
        params["tier"] = labels.plan_name(str(params["tier"]))
    return gettext(refusal.template) % params


N = TypeVar("N", int, float)
D = TypeVar("D", int, float, None)


def _number(
    data: Mapping[str, object],
    name: str,
    kind: Callable[[Any], N],
    default: D,
    low: float,
    high: float,
) -> N | D:
    raw = data.get(name)
    if raw is None or raw == "":
        return default
    value: N | None
    try:
        value = kind(raw) if not isinstance(raw, bool) else None
    except (TypeError, ValueError):
        value = None
    field = gettext(FIELD_NAMES.get(name, name))
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        raise JobRequestError(gettext("%(field)s must be a number.") % {"field": field})
    if not low <= value <= high:
        raise JobRequestError(
            gettext("%(field)s must be between %(low)s and %(high)s.")
            % {"field": field, "low": f"{low:g}", "high": f"{high:g}"}
        )
    return value


def _plain(bound: float) -> str:
    """4294967295, not 4.29497e+09; 0.5 stays 0.5."""
    return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"


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


async def usage_today(farm: Farm, db: AsyncSession, user_id: int, now: float) -> int:
    """The user's submissions in the last day: the same count admission checks."""
    return (await _daily_usage(farm, db, user_id, now)).count(now)


async def usage_counts(
    farm: Farm, db: AsyncSession, user_ids: list[int], now: float
) -> dict[int, int]:
    """:func:`usage_today` of many users: the farm's count where it keeps one, the
    database's for the rest (one query), so pages show what admission would check."""
    known = {i: usage.count(now) for i in user_ids if (usage := farm.usage_of(i)) is not None}
    missing = [i for i in user_ids if i not in known]
    return known | (await usage_since(db, missing, now - DAY_S) if missing else {})


async def _daily_usage(farm: Farm, db: AsyncSession, user_id: int, now: float) -> DailyUsage:
    """The user's last-day submissions: read from the database once, then kept in memory."""
    usage = farm.usage_of(user_id)
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
        usage = farm.remember_usage(user_id, loaded)
    return usage


async def _admit_and_queue(
    farm: Farm, db: AsyncSession, user: models.User, req: JobRequest, api_key_id: str | None
) -> list[models.Job]:
    snap = farm.refresh_user(user)
    tier = farm.tiers[snap.tier]
    now = farm.clock()
    usage = await _daily_usage(farm, db, user.id, now)
    queued = sum(1 for job in farm.queue.values() if job.user_id == snap.id)
    refusal = scheduler.check_limits(tier, req.steps, req.guidance, req.variants)
    if refusal:
        raise JobRequestError(refusal_text(refusal))
    refusal = scheduler.check_quota(tier, usage.count(now), queued, req.variants)
    if refusal:
        raise QuotaExceededError(refusal_text(refusal))
    base_seed = req.seed if req.seed is not None else secrets.randbelow(2**32)
    jobs = [
        models.Job(
            id=secrets.token_urlsafe(12),
            user_id=user.id,
            prompt=req.prompt,
            prompt_folded=models.fold(req.prompt),
            seed=(base_seed + i) % 2**32,
            guidance=req.guidance,
            steps=req.steps,
            model=DEFAULT_MODEL,
            attempt=0,
            attempt_base=0,
            priority=0,
            agent_id=None,
            public=False,
            hidden=False,
            like_count=0,
            error=None,
            created_at=now,
            enqueued_at=now + i * 1e-6,
            started_at=None,
            finished_at=None,
            api_key_id=api_key_id,
        )
        for i in range(req.variants)
    ]
    usage.add(now, len(jobs))
    try:
        await farm.writer.run(lambda conn: lifecycle.create(conn, jobs))
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
    """Whether ``viewer`` may see ``job`` now: its owner, an admin, or anyone if public
    and not hidden by a moderator.

    Live streams ask again on every event: a job made private stops streaming."""
    if job.public and not job.hidden:
        return True
    return viewer is not None and (viewer.is_admin or viewer.id == job.user_id)


async def get_owned(db: AsyncSession, user: models.User, job_id: str) -> models.Job | None:
    """The job if ``user`` may change it (owner or admin)."""
    job = await db.get(models.Job, job_id)
    if job is None or not (user.is_admin or job.user_id == user.id):
        return None
    return job


async def result_of(db: AsyncSession, job_id: str) -> models.Result | None:
    return await db.get(models.Result, job_id)


class JobPage(NamedTuple):
    """One page of a user's jobs, newest first, and how many match in all."""

    jobs: list[models.Job]
    total: int


async def results_for(db: AsyncSession, job_ids: list[str]) -> dict[str, models.Result]:
    """The stored results of those of ``job_ids`` that have one (for thumbnails)."""
    if not job_ids:
        return {}
    rows = await db.scalars(select(models.Result).where(models.Result.job_id.in_(job_ids)))
    return {row.job_id: row for row in rows}


async def list_jobs(
    db: AsyncSession,
    user: models.User,
    *,
    limit: int = 20,
    offset: int = 0,
    query: str = "",
    state: str = "",
) -> JobPage:
    where = [models.Job.user_id == user.id]
    if query:
        where.append(prompt_matches(query))
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
    return JobPage(list(rows), int(total or 0))


def prompt_matches(query: str) -> ColumnElement[bool]:
    """Prompts containing ``query``, case folded the same way on SQLite and PostgreSQL
    (LIKE wildcards in the query are literal characters)."""
    folded = models.fold(query)
    escaped = folded.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return models.Job.prompt_folded.like(f"%{escaped}%", escape="\\")


async def cancel(
    farm: Farm, db: AsyncSession, job: models.Job, why: str = N_("cancelled by user")
) -> bool:
    """Cancel a queued or running job; False if it had already finished."""
    if not can(JobState(job.state), JobEvent.CANCEL):
        return False
    await db.commit()  # what the caller recorded (an audit entry); and a fresh read below
    now, job_id = farm.clock(), job.id
    done = await farm.writer.run(lambda conn: lifecycle.cancel(conn, job_id, why, now))
    await db.refresh(job)
    if done is None:
        return False  # it finished meanwhile
    conn = farm.agents.get(done.agent_id) if done.agent_id else None
    attempt = done.attempt
    if conn is not None and conn.session.is_held(job.id, attempt):
        # A dead agent is handled by the lease machinery; nothing to do here.
        with contextlib.suppress(Exception):
            await conn.send(Cancel(job=job.id, attempt=attempt, reason=why))
    farm.settle(job.id)
    return True


async def export_model(farm: Farm, job: models.Job, fmt: str, signed: bool = False) -> ModelFile:
    """The stored model as ``fmt``, open for streaming (LookupError: no such format/file);
    ``signed``: a short-lived URL to redirect to instead, where the store makes them
    (downloads; not the viewer's GLB, which a cross-origin redirect would break).

    Conversions are cached, single-flight and limited: see ``coordinator.modelfiles``."""
    return await farm.models.open(job.id, fmt, signed=signed)


@dataclass(frozen=True, slots=True)
class JobProgress:
    """The live view of a job for templates and the API.

    ``stage``/``step``/``total`` while an agent reports on it; ``position`` (and
    ``eta_s``, the time until it starts) while it waits with an estimate;
    ``agents_online`` while it is queued; None where a fact does not apply."""

    state: str
    stage: str | None = None
    step: int | None = None
    total: int | None = None
    eta_s: float | None = None
    position: int | None = None
    agents_online: int | None = None

    def as_json(self) -> dict[str, object]:
        """The API's ``progress`` object: only the facts that apply to the job now."""
        data: dict[str, object] = {"state": self.state}
        if self.stage is not None:
            data.update(stage=self.stage, step=self.step, total=self.total, eta_s=self.eta_s)
        if self.position is not None:
            data.update(position=self.position, eta_s=self.eta_s)
        if self.agents_online is not None:
            data["agents_online"] = self.agents_online
        return data


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
) -> JobProgress:
    """The live view of a job for templates and the API."""
    live = farm.progress.get(job.id)
    progress = JobProgress(state=job.state)
    if live is not None:
        progress = replace(
            progress, stage=live.stage, step=live.step, total=live.total, eta_s=live.eta_s
        )
    if job.state == JobState.QUEUED:
        estimate = (positions if positions is not None else farm.positions()).get(job.id)
        if estimate is not None:
            progress = replace(progress, position=estimate.position, eta_s=estimate.eta_s)
        progress = replace(progress, agents_online=farm.agents_online())
    return progress


async def delete(farm: Farm, db: AsyncSession, job: models.Job) -> None:
    """Cancel the job if it is still live, then remove its rows and files."""
    await cancel(farm, db, job, N_("deleted by its owner"))
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


MAX_BULK_DELETE = 100


async def delete_many(farm: Farm, db: AsyncSession, user: models.User, job_ids: list[str]) -> int:
    """Delete those of ``job_ids`` that ``user`` owns (admins too: only their own, here);
    the others are skipped. Returns how many went."""
    if len(job_ids) > MAX_BULK_DELETE:
        raise JobRequestError(f"At most {MAX_BULK_DELETE} models can be deleted at once.")
    owned = list(
        await db.scalars(
            select(models.Job).where(models.Job.id.in_(set(job_ids)), models.Job.user_id == user.id)
        )
    )
    for job in owned:
        await delete(farm, db, job)
    return len(owned)


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
    raise JobRequestError(gettext("Visibility must be 'public' or 'private' (or true/false)."))


async def agent_name(db: AsyncSession, agent_id: str | None) -> str | None:
    """The display name of the agent that made a model (it may be gone since)."""
    if agent_id is None:
        return None
    agent = await db.get(models.Agent, agent_id)
    return agent.name if agent is not None else None
