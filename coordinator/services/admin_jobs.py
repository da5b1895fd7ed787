"""Job administration for the admin console: the queue by tier, running jobs,
failures; cancel, requeue and priority, each validated, audited and committed here."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

import scheduler
from coordinator import labels
from coordinator.farm import lifecycle
from coordinator.farm.engine import Farm
from coordinator.farm.live import LiveProgress
from coordinator.i18n import N_, gettext
from coordinator.services import audit, jobs
from coordinator.services.errors import ActionError
from coordinator.store import models
from scheduler.lifecycle import JobEvent, JobState, can

SHOWN_PER_TIER = 100
SHOWN_FAILURES = 50
MAX_PRIORITY = 1000


class JobActionError(ActionError):
    """A job action that does not apply; the message is shown to the admin."""


@dataclass(frozen=True)
class QueuedRow:
    job: models.Job
    owner: str
    position: int | None
    eta_s: float | None


@dataclass(frozen=True)
class RunningRow:
    job: models.Job
    owner: str
    agent: str
    progress: LiveProgress | None
    lease_left_s: float


async def _jobs_with_owners(db: AsyncSession, ids: list[str]) -> dict[str, tuple[models.Job, str]]:
    if not ids:
        return {}
    rows = await db.execute(
        select(models.Job, models.User.username)
        .join(models.User, models.User.id == models.Job.user_id)
        .where(models.Job.id.in_(ids))
    )
    return {job.id: (job, owner) for job, owner in rows}


async def queue_by_tier(farm: Farm, db: AsyncSession) -> dict[str, tuple[int, list[QueuedRow]]]:
    """Per tier (rank order): how many wait, and the first ones in dispatch order."""
    positions = farm.positions()
    grouped = farm.queued_by_tier()
    far = len(positions) + 1

    def place(job: scheduler.Job) -> tuple[int, float, str]:
        estimate = positions.get(job.id)
        return (estimate.position if estimate else far, job.enqueued_at, job.id)

    shown = {tier: sorted(queued, key=place)[:SHOWN_PER_TIER] for tier, queued in grouped.items()}
    found = await _jobs_with_owners(db, [job.id for queued in shown.values() for job in queued])
    result: dict[str, tuple[int, list[QueuedRow]]] = {}
    for tier in grouped:
        rows = []
        for job in shown[tier]:
            if job.id in found:
                estimate = positions.get(job.id)
                rows.append(
                    QueuedRow(
                        *found[job.id],
                        estimate.position if estimate else None,
                        estimate.eta_s if estimate else None,
                    )
                )
        result[tier] = (len(grouped[tier]), rows)
    return result


async def running(farm: Farm, db: AsyncSession) -> list[RunningRow]:
    leases = sorted(farm.leases.values(), key=lambda lease: lease.job_id)
    found = await _jobs_with_owners(db, [lease.job_id for lease in leases])
    now = farm.clock()
    rows = []
    for lease in leases:
        if lease.job_id in found:
            conn = farm.agents.get(lease.agent_id)
            agent = conn.name if conn else f"{lease.agent_id} (offline)"
            progress = farm.progress.get(lease.job_id)
            rows.append(RunningRow(*found[lease.job_id], agent, progress, lease.expires_at - now))
    return rows


async def failures(db: AsyncSession) -> list[tuple[models.Job, str]]:
    rows = await db.execute(
        select(models.Job, models.User.username)
        .join(models.User, models.User.id == models.Job.user_id)
        .where(models.Job.state.in_([JobState.FAILED, JobState.CANCELLED]))
        .order_by(models.Job.finished_at.desc(), models.Job.id)
        .limit(SHOWN_FAILURES)
    )
    return list(rows)


async def cancel(farm: Farm, db: AsyncSession, job: models.Job, actor: models.User) -> None:
    audit.record(db, actor, "job.cancel", job.id, f"was {job.state}", farm.clock())
    if not await jobs.cancel(farm, db, job, N_("cancelled by an administrator")):
        raise JobActionError(
            gettext("The job is %(state)s; only waiting or running jobs can be cancelled.")
            % {"state": labels.job_state(job.state)}
        )


async def requeue(farm: Farm, db: AsyncSession, job: models.Job, actor: models.User) -> None:
    """Put a failed or cancelled job back in line with fresh attempts."""
    state = JobState(job.state)
    if not can(state, JobEvent.REQUEUE):
        raise JobActionError(
            gettext("The job is %(state)s; only failed or cancelled jobs can be requeued.")
            % {"state": labels.job_state(job.state)}
        )
    now, job_id = farm.clock(), job.id
    audit.record(db, actor, "job.requeue", job.id, f"was {state.value}", now)
    await db.commit()
    requeued = await farm.writer.run(lambda conn: lifecycle.requeue(conn, job_id, now))
    await db.refresh(job)
    if requeued is None:
        raise JobActionError(
            gettext("The job is %(state)s now; it was not requeued.")
            % {"state": labels.job_state(job.state)}
        )
    await farm.remember_user(db, job.user_id)
    farm.enqueue(requeued)


def parse_priority(raw: str) -> int:
    try:
        priority = int(raw.strip())
    except ValueError:
        raise JobActionError(gettext("Priority must be a whole number.")) from None
    if not -MAX_PRIORITY <= priority <= MAX_PRIORITY:
        raise JobActionError(
            gettext("Priority must be between %(low)s and %(high)s.")
            % {"low": -MAX_PRIORITY, "high": MAX_PRIORITY}
        )
    return priority


async def set_priority(
    farm: Farm, db: AsyncSession, job: models.Job, priority: int, actor: models.User
) -> None:
    if JobState(job.state).terminal:
        raise JobActionError(
            gettext("The job is %(state)s; its priority no longer matters.")
            % {"state": labels.job_state(job.state)}
        )
    old = job.priority
    job.priority = priority
    audit.record(db, actor, "job.priority", job.id, f"{old} -> {priority}", farm.clock())
    await db.commit()
    if farm.set_priority(job.id, priority):
        farm.publish(job.id)
