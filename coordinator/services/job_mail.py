"""The "your model is ready" e-mail, for users who asked for it.

Sent when a job of theirs ends (succeeded or failed) after waiting at least
``notify_after_s`` since it was submitted, to their proven address, once per
job: the job row is claimed with a conditional update before the mail goes, so
a result arriving twice or two coordinator tasks racing send one mail.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coordinator.i18n import gettext_noop as N_
from coordinator.services.mailer import Mail, Mailer, compose
from coordinator.store import models
from scheduler.lifecycle import JobState

NOTIFIED_STATES = (JobState.SUCCEEDED, JobState.FAILED)
PROMPT_CHARS = 200  # of the prompt quoted in the mail


async def claim(
    db: AsyncSession, job_id: str, min_wait_s: float, now: float
) -> tuple[models.Job, models.User] | None:
    """The finished job and its owner if the owner gets a mail for it, marking it sent."""
    job = await db.get(models.Job, job_id)
    if job is None or job.state not in NOTIFIED_STATES or job.finished_at is None:
        return None
    if job.notified_at is not None or job.finished_at - job.created_at < min_wait_s:
        return None
    user = await db.get(models.User, job.user_id)
    if (
        user is None
        or not user.notify_email
        or not user.email
        or user.email_verified_at is None
        or user.banned
    ):
        return None
    kind = models.Job
    claimed = await db.execute(
        update(kind).where(kind.id == job_id, kind.notified_at.is_(None)).values(notified_at=now)
    )
    await db.commit()
    return (job, user) if getattr(claimed, "rowcount", 0) == 1 else None


def job_mail(job: models.Job, user: models.User, base_url: str) -> Mail:
    assert user.email is not None
    ok = job.state == JobState.SUCCEEDED
    prompt = job.prompt if len(job.prompt) <= PROMPT_CHARS else job.prompt[:PROMPT_CHARS] + "…"
    return compose(
        "job_done",
        user.email,
        N_("Your 3D model is ready") if ok else N_("Your 3D model could not be made"),
        user.locale,
        ok=ok,
        username=user.username,
        prompt=prompt,
        error=job.error or "",
        link=f"{base_url.rstrip('/')}/jobs/{job.id}",
        profile_link=f"{base_url.rstrip('/')}/profile#mail",
    )


async def notify_finished(
    sessions: async_sessionmaker[AsyncSession],
    mailer: Mailer,
    job_id: str,
    clock: Callable[[], float],
) -> bool:
    """Mail the owner of a finished job if they opted in and it waited long; True if sent."""
    async with sessions() as db:
        found = await claim(db, job_id, mailer.settings.notify_after_s, clock())
    if found is None:
        return False
    await mailer.send(job_mail(*found, mailer.settings.public_url))
    return True
