"""Declines kept in the database: the agents whose owners' blocklists refused a job.

The farm keeps them in memory for planning (``scheduler.Job.excluded_agents``); these
rows make them outlive a restart and reach every replica, so a blocked job is never
offered to that agent again and never spends its tries bouncing off it. Units for
``farm.writer`` (a sync ``Connection``) and one query for loading the queue.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import Connection, Select, Table, insert, select

from coordinator.store import models
from scheduler.lifecycle import JobState

_DECLINES = cast(Table, models.JobDecline.__table__)
_JOBS = cast(Table, models.Job.__table__)


def record(db: Connection, job_id: str, agent_id: str) -> None:
    """Remember that ``agent_id`` declined ``job_id`` (once; the job may be gone)."""
    known = db.execute(
        select(_DECLINES.c.agent_id).where(
            _DECLINES.c.job_id == job_id, _DECLINES.c.agent_id == agent_id
        )
    ).first()
    if known is None and db.execute(select(_JOBS.c.id).where(_JOBS.c.id == job_id)).first():
        db.execute(insert(_DECLINES).values(job_id=job_id, agent_id=agent_id))


def of_job(db: Connection, job_id: str) -> frozenset[str]:
    rows = db.execute(select(_DECLINES.c.agent_id).where(_DECLINES.c.job_id == job_id))
    return frozenset(row[0] for row in rows)


def of_queued_jobs() -> Select[tuple[str, str]]:
    """(job id, agent id) of every queued job's declines: one query at start-up."""
    queued = select(_JOBS.c.id).where(_JOBS.c.state == JobState.QUEUED.value)
    return select(_DECLINES.c.job_id, _DECLINES.c.agent_id).where(_DECLINES.c.job_id.in_(queued))
