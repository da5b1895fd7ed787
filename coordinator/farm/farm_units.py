"""Units of database work for the farm's hot path, run by the ``Writer`` in its thread.

Each function takes a synchronous SQLAlchemy ``Connection`` inside the writer's
transaction and must not await; see ``coordinator.db.Writer``.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import Connection, Table, bindparam, select, update

import scheduler
from coordinator.store import models
from protocol import JobSpec
from scheduler.lifecycle import JobState

_JOBS = cast(Table, models.Job.__table__)
# Built once: constructing a statement costs more than running it on SQLite.
_CLAIM = (
    update(_JOBS)
    .where(_JOBS.c.id == bindparam("b_job_id"), _JOBS.c.state == JobState.QUEUED.value)
    .values(
        state=JobState.ASSIGNED.value,
        attempt=_JOBS.c.attempt + 1,
        agent_id=bindparam("b_agent_id"),
        lease_expires_at=bindparam("b_expires"),
    )
    .returning(
        _JOBS.c.attempt,
        _JOBS.c.prompt,
        _JOBS.c.seed,
        _JOBS.c.guidance,
        _JOBS.c.steps,
        _JOBS.c.model,
    )
)


def claim(db: Connection, agent_id: str, job_ids: tuple[str, ...], expires: float) -> list[JobSpec]:
    """Move still-queued jobs to ``assigned``; a job cancelled meanwhile is left out."""
    specs: list[JobSpec] = []
    for job_id in job_ids:
        row = db.execute(
            _CLAIM, {"b_job_id": job_id, "b_agent_id": agent_id, "b_expires": expires}
        ).first()
        if row is not None:
            attempt, prompt, seed, guidance, steps, model = row
            specs.append(JobSpec(job_id, attempt, prompt, seed, guidance, steps, model))
    return specs


def lose(
    db: Connection, job_id: str, attempt: int, why: str, now: float, max_attempts: int
) -> models.Job | None:
    """Requeue (or fail, out of tries) the job if ``attempt`` is still its live one."""
    row = db.execute(
        select(*models.Job.__table__.c)
        .where(
            models.Job.id == job_id,
            models.Job.attempt == attempt,
            models.Job.state.in_([JobState.ASSIGNED, JobState.RUNNING]),
        )
        .with_for_update()
    ).first()
    if row is None:
        return None
    job = models.Job(**row._asdict())
    decision = scheduler.on_lost(attempt - job.attempt_base - 1, max_attempts)
    job.agent_id = job.lease_expires_at = None
    if isinstance(decision, scheduler.Fail):
        job.state, job.error, job.finished_at = (
            JobState.FAILED,
            f"{decision.reason} (last: {why})",
            now,
        )
    else:
        job.state, job.error = JobState.QUEUED, f"attempt {attempt} lost: {why}; retrying"
    db.execute(
        update(models.Job)
        .where(models.Job.id == job_id)
        .values(
            state=job.state,
            error=job.error,
            finished_at=job.finished_at,
            agent_id=None,
            lease_expires_at=None,
        )
    )
    return job
