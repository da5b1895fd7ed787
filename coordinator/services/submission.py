"""Job submission: parse a request, admit it (tier limits, daily quota, queued cap), queue it.

Shared by the HTML form and the JSON API; the daily usage it counts is also what the
profile and admin pages show (:func:`usage_today`, :func:`usage_counts`).
"""

from __future__ import annotations

import asyncio
import math
import secrets
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

import scheduler
from coordinator import labels
from coordinator.farm import lifecycle
from coordinator.farm.engine import Farm
from coordinator.farm.live import DailyUsage
from coordinator.i18n import N_, gettext
from coordinator.meshes.options import MeshRequest
from coordinator.services import job_images, mesh_options
from coordinator.store import models
from protocol import IMAGE_MODEL, limits
from scheduler.lifecycle import JobState
from scheduler.snapshot import DEFAULT_MODEL

DAY_S = 86400.0
# The first key of the advisory locks that serialise one user's submissions across
# replicas (the second is the user id); the leader's lock uses the one-key form.
SUBMIT_LOCK_CLASS = 0x5346


class JobRequestError(ValueError):
    """A submission that cannot be accepted; the message is shown to the user.

    ``field``: the form field it is about, where the form shows it beside the field."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


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
    # -- image-to-3D: the checked, re-encoded picture (services/job_images.py); the
    # prompt is then an optional caption.
    image: job_images.InputImage | None = None
    mesh: MeshRequest = field(default_factory=MeshRequest)  # target faces, "for 3D printing"

    @classmethod
    def parse(
        cls, data: Mapping[str, object], image: job_images.InputImage | None = None
    ) -> JobRequest:
        """Validate raw form/JSON values; every problem becomes a clear message."""
        prompt = str(data.get("prompt") or "").strip()
        if not prompt and image is None:
            raise JobRequestError(
                gettext("Describe the object you want, e.g. 'a red chair', or choose a picture.")
            )
        if len(prompt) > limits.MAX_PROMPT_CHARS:
            raise JobRequestError(
                gettext("The prompt is %(length)s characters; the limit is %(max)s.")
                % {"length": len(prompt), "max": limits.MAX_PROMPT_CHARS}
            )
        if any(ord(c) < 32 and c not in "\t" for c in prompt):
            raise JobRequestError(gettext("The prompt contains control characters."))
        try:
            mesh = mesh_options.parse(data)
        except mesh_options.MeshOptionsError as exc:
            raise JobRequestError(str(exc), exc.field) from None
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
            image=image,
            mesh=mesh,
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


async def _queued_in_database(db: AsyncSession, user_id: int) -> int:
    count = await db.scalar(
        select(func.count())
        .select_from(models.Job)
        .where(models.Job.user_id == user_id, models.Job.state == JobState.QUEUED)
    )
    return int(count or 0)


async def _admit_and_queue(
    farm: Farm,
    db: AsyncSession,
    user: models.User,
    req: JobRequest,
    api_key_id: str | None,
    webhook_url: str | None,
) -> list[models.Job]:
    snap = farm.refresh_user(user)
    tier = farm.tiers[snap.tier]
    now = farm.clock()
    if farm.replicated:
        # Replica mode: the user's submissions on every replica take turns (a lock held
        # until this session's transaction ends), and count from the database.
        await db.execute(select(func.pg_advisory_xact_lock(SUBMIT_LOCK_CLASS, user.id)))
        queued = await _queued_in_database(db, user.id)
    else:
        queued = farm.queued_count(user.id)
    usage = await _daily_usage(farm, db, user.id, now)
    refusal = scheduler.check_limits(tier, req.steps, req.guidance, req.variants)
    if refusal:
        raise JobRequestError(refusal_text(refusal))
    refusal = scheduler.check_quota(tier, usage.count(now), queued, req.variants)
    if refusal:
        raise QuotaExceededError(refusal_text(refusal))
    base_seed = req.seed if req.seed is not None else secrets.randbelow(2**32)
    # Plain values (models.loaded): the rows are inserted through Core (lifecycle.create).
    jobs = [
        models.loaded(
            models.Job,
            dict(
                id=secrets.token_urlsafe(12),
                user_id=user.id,
                prompt=req.prompt,
                prompt_folded=models.fold(req.prompt),
                seed=(base_seed + i) % 2**32,
                guidance=req.guidance,
                steps=req.steps,
                model=DEFAULT_MODEL if req.image is None else IMAGE_MODEL,
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
                webhook_url=webhook_url,
                **job_images.columns(req.image),
                mesh_target_faces=req.mesh.target_faces,
                mesh_printable=req.mesh.printable,
            ),
        )
        for i in range(req.variants)
    ]
    usage.add(now, len(jobs))
    try:
        if req.image is not None:  # on disk before the rows exist: a queued job has it
            await asyncio.to_thread(job_images.store_for, farm.store, jobs, req.image)
        await farm.writer.run(lambda conn: lifecycle.create(conn, jobs))
    except BaseException:
        usage.add(now, -len(jobs))
        if req.image is not None:
            await asyncio.to_thread(job_images.remove_for, farm.store, jobs)
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
    webhook_url: str | None = None,
) -> list[models.Job]:
    """Admit (tier limits, quota) and queue ``req.variants`` jobs; returns them.

    ``api_key_id``: the key an API submission came with (its webhook hears the end);
    ``webhook_url``: the jobs' own webhook, checked (``job_webhooks.PerJob.claim``)."""
    # One submission of a user at a time, from the admission check until its jobs are
    # queued: the insert awaits the database, and parallel requests would otherwise all
    # pass the check against the same queue count.
    async with farm.submitting(user.id):
        jobs = await _admit_and_queue(farm, db, user, req, api_key_id, webhook_url)
    # Let the dispatcher plan before the caller estimates the queue: the new job may
    # leave it right away, and the estimate (a pass over the whole queue) then waits
    # on the event loop behind the assignment instead of in front of it.
    await asyncio.sleep(0)
    return jobs
