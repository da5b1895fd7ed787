"""The moderation queue: open reports of public models, and the admin's answers to
them (hide the model, or dismiss the report), each written to the audit log."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from coordinator.farm.engine import Farm
from coordinator.services import audit
from coordinator.store import models


@dataclass(frozen=True)
class OpenReport:
    id: int
    job_id: str
    prompt: str
    owner: str
    reporter: str | None
    reason: str
    created_at: float
    hidden: bool


async def open_reports(
    db: AsyncSession, *, limit: int = 50, offset: int = 0
) -> tuple[list[OpenReport], int]:
    """Unresolved reports, oldest first (the queue's order)."""
    owner = aliased(models.User)
    reporter = aliased(models.User)
    where = models.Report.resolved_at.is_(None)
    total = await db.scalar(select(func.count()).select_from(models.Report).where(where))
    rows = await db.execute(
        select(models.Report, models.Job, owner.username, reporter.username)
        .join(models.Job, models.Job.id == models.Report.job_id)
        .join(owner, owner.id == models.Job.user_id)
        .outerjoin(reporter, reporter.id == models.Report.reporter_id)
        .where(where)
        .order_by(models.Report.created_at, models.Report.id)
        .limit(limit)
        .offset(offset)
    )
    return [
        OpenReport(
            id=report.id,
            job_id=job.id,
            prompt=job.prompt,
            owner=owner_name,
            reporter=reporter_name,
            reason=report.reason,
            created_at=report.created_at,
            hidden=job.hidden,
        )
        for report, job, owner_name, reporter_name in rows
    ], int(total or 0)


async def hidden_jobs(db: AsyncSession, limit: int = 100) -> list[tuple[models.Job, str]]:
    """Models a moderator hid, newest first, with their owners' names (to unhide)."""
    rows = await db.execute(
        select(models.Job, models.User.username)
        .join(models.User, models.User.id == models.Job.user_id)
        .where(models.Job.hidden.is_(True))
        .order_by(models.Job.created_at.desc())
        .limit(limit)
    )
    return [(job, name) for job, name in rows]


async def _resolve_open(db: AsyncSession, job_id: str, resolution: str, now: float) -> int:
    result = await db.execute(
        update(models.Report)
        .where(models.Report.job_id == job_id, models.Report.resolved_at.is_(None))
        .values(resolved_at=now, resolution=resolution)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def set_hidden(
    farm: Farm, db: AsyncSession, admin: models.User, job: models.Job, hidden: bool
) -> None:
    """Hide a model (its open reports are resolved with it) or show it again."""
    now = farm.clock()
    job.hidden = hidden
    farm.forget_final(job.id)  # reads from now on see the row as changed here
    detail = ""
    if hidden:
        resolved = await _resolve_open(db, job.id, "hidden", now)
        detail = f"{resolved} open report(s) resolved; prompt: {job.prompt[:200]}"
    audit.record(db, admin, "job.hide" if hidden else "job.unhide", job.id, detail, now=now)
    await db.commit()
    farm.publish(job.id)  # open streams of the job ask again who may see it


async def dismiss(farm: Farm, db: AsyncSession, admin: models.User, report_id: int) -> bool:
    """Close one report without hiding the model; False if there is no such open report."""
    report = await db.get(models.Report, report_id)
    if report is None or report.resolved_at is not None:
        return False
    now = farm.clock()
    report.resolved_at, report.resolution = now, "dismissed"
    audit.record(db, admin, "report.dismiss", report.job_id, report.reason[:200], now=now)
    await db.commit()
    return True
