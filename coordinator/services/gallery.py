"""The public gallery: public models for everyone, likes, creator pages, and reports
that feed the admins' moderation queue (see :mod:`coordinator.services.moderation`)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.i18n import gettext as _
from coordinator.services import jobs
from coordinator.store import models
from scheduler.lifecycle import JobState

ORDERS = ("newest", "liked")
MAX_REASON = 500
# Reports a user may file per REPORT_WINDOW_S; bounds what one account can make admins read.
REPORTS_PER_WINDOW = 10
REPORT_WINDOW_S = 3600.0


class GalleryError(ValueError):
    """A like or report that cannot be accepted; the message is shown to the user."""


@dataclass(frozen=True)
class Card:
    """One model as the gallery shows it."""

    job_id: str
    prompt: str
    creator: str
    created_at: float
    likes: int
    has_preview: bool
    liked: bool
    hidden: bool
    public: bool


def in_gallery() -> list[ColumnElement[bool]]:
    """What the gallery shows: public, not hidden, finished with a model."""
    return [
        models.Job.public.is_(True),
        models.Job.hidden.is_(False),
        models.Job.state == JobState.SUCCEEDED,
    ]


def is_listed(job: models.Job) -> bool:
    """The same test for one loaded job (embed pages, share meta, likes, reports)."""
    return job.public and not job.hidden and job.state == JobState.SUCCEEDED


async def cards(
    db: AsyncSession,
    viewer: models.User | None,
    *,
    order: str = "newest",
    query: str = "",
    creator: models.User | None = None,
    limit: int = 24,
    offset: int = 0,
) -> tuple[list[Card], int]:
    """A page of gallery cards and how many there are in all.

    On a creator's page the creator sees their own public models that a moderator
    hid as well (marked hidden); nobody else does."""
    if creator is not None and viewer is not None and viewer.id == creator.id:
        where = [models.Job.public.is_(True), models.Job.state == JobState.SUCCEEDED]
    else:
        where = in_gallery()
    if creator is not None:
        where.append(models.Job.user_id == creator.id)
    if query:
        where.append(jobs.prompt_matches(query))
    total = await db.scalar(select(func.count()).select_from(models.Job).where(*where))
    ordering = (
        (models.Job.like_count.desc(), models.Job.created_at.desc(), models.Job.id)
        if order == "liked"
        else (models.Job.created_at.desc(), models.Job.id)
    )
    rows = (
        await db.execute(
            select(models.Job, models.User.username, models.Result.has_preview)
            .join(models.User, models.User.id == models.Job.user_id)
            .outerjoin(models.Result, models.Result.job_id == models.Job.id)
            .where(*where)
            .order_by(*ordering)
            .limit(limit)
            .offset(offset)
        )
    ).all()
    liked = await liked_by(db, viewer, [job.id for job, _, _ in rows])
    return [
        Card(
            job_id=job.id,
            prompt=job.prompt,
            creator=name,
            created_at=job.created_at,
            likes=job.like_count,
            has_preview=bool(preview),
            liked=job.id in liked,
            hidden=job.hidden,
            public=job.public,
        )
        for job, name, preview in rows
    ], int(total or 0)


async def liked_by(db: AsyncSession, viewer: models.User | None, job_ids: list[str]) -> set[str]:
    if viewer is None or not job_ids:
        return set()
    rows = await db.scalars(
        select(models.Like.job_id).where(
            models.Like.user_id == viewer.id, models.Like.job_id.in_(job_ids)
        )
    )
    return set(rows)


async def creator_named(db: AsyncSession, name: str) -> models.User | None:
    if not name or len(name) > 32:
        return None
    user: models.User | None = await db.scalar(
        select(models.User).where(models.User.username == name)
    )
    return user if user is not None and not user.banned else None


async def toggle_like(
    db: AsyncSession, user: models.User, job: models.Job, now: float
) -> tuple[bool, int]:
    """Like ``job`` or take the like back; (liked now, the job's like count)."""
    if not is_listed(job):
        raise GalleryError(_("Only public models in the gallery can be liked."))
    removed = await db.execute(
        delete(models.Like).where(models.Like.job_id == job.id, models.Like.user_id == user.id)
    )
    liked = not removed.rowcount  # type: ignore[attr-defined]
    if liked:
        try:
            async with db.begin_nested():
                await db.execute(
                    insert(models.Like).values(job_id=job.id, user_id=user.id, created_at=now)
                )
        except IntegrityError:
            pass  # a parallel request of the same user liked it first: liked either way
    count = select(func.count()).where(models.Like.job_id == job.id).scalar_subquery()
    await db.execute(update(models.Job).where(models.Job.id == job.id).values(like_count=count))
    await db.commit()
    await db.refresh(job)
    return liked, job.like_count


async def forget_likes_of(db: AsyncSession, user_id: int) -> None:
    """Take back every like of a user who is leaving (in the caller's transaction):
    the rows would go by cascade, but the liked models' counts must follow."""
    liked = list(await db.scalars(select(models.Like.job_id).where(models.Like.user_id == user_id)))
    if not liked:
        return
    await db.execute(delete(models.Like).where(models.Like.user_id == user_id))
    count = select(func.count()).where(models.Like.job_id == models.Job.id).scalar_subquery()
    await db.execute(update(models.Job).where(models.Job.id.in_(liked)).values(like_count=count))


def parse_reason(raw: object) -> str:
    reason = str(raw or "").strip() if isinstance(raw, str | None) else ""
    if not reason:
        raise GalleryError(_("Say what is wrong with this model."))
    if len(reason) > MAX_REASON:
        raise GalleryError(
            _("The reason is limited to %(limit)d characters.") % {"limit": MAX_REASON}
        )
    if any(ord(c) < 32 and c not in "\t\r\n" for c in reason):
        raise GalleryError(_("The reason contains control characters."))
    return reason


async def report(
    db: AsyncSession, user: models.User, job: models.Job, reason: str, now: float
) -> models.Report:
    """File a report for the moderation queue (one open report per user and model, and
    at most REPORTS_PER_WINDOW per user per hour)."""
    if not is_listed(job):
        raise GalleryError(_("Only public models in the gallery can be reported."))
    if job.user_id == user.id:
        raise GalleryError(_("This is your own model: make it private or delete it instead."))
    open_one = await db.scalar(
        select(models.Report.id).where(
            models.Report.job_id == job.id,
            models.Report.reporter_id == user.id,
            models.Report.resolved_at.is_(None),
        )
    )
    if open_one is not None:
        raise GalleryError(_("You have reported this model already; an admin will look at it."))
    recent = await db.scalar(
        select(func.count())
        .select_from(models.Report)
        .where(
            models.Report.reporter_id == user.id,
            models.Report.created_at >= now - REPORT_WINDOW_S,
        )
    )
    if int(recent or 0) >= REPORTS_PER_WINDOW:
        raise GalleryError(_("You have sent many reports in the last hour; try again later."))
    entry = models.Report(job_id=job.id, reporter_id=user.id, reason=reason, created_at=now)
    db.add(entry)
    await db.commit()
    return entry
