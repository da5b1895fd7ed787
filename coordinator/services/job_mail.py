"""The "your model is ready" e-mail, for users who asked for it.

Sent when a job of theirs ends (succeeded or failed) after waiting at least
``notify_after_s`` since it was submitted, to their proven address, once per job.
The job's end writes a row in ``job_mail_outbox`` in the transaction that ends it
(``coordinator.farm.lifecycle``); :class:`JobMails` sends it (within :data:`POLL_S`)
through a ``coordinator.services.outbox.Pump``, so a restart, a crash or a stopped replica loses
no mail. A mail server that refuses or cannot be reached is tried again after 30 s,
2, 8 and 32 min (:data:`ATTEMPTS` in all), then the mail is given up (logged). Once
sent, ``jobs.notified_at`` is set and the row goes: a result arriving twice, or the
job requeued and ending again, mails nothing more. At least once: a mail cut off by a
crash after the server took it is sent again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, select, update

from coordinator.farm.engine import Farm
from coordinator.i18n import gettext_noop as N_
from coordinator.services import outbox
from coordinator.services.mailer import SMTP_CONNECTIONS, Mail, Mailer, MailError, compose
from coordinator.store import models
from scheduler.lifecycle import JobState

log = logging.getLogger(__name__)

NOTIFIED_STATES = (JobState.SUCCEEDED, JobState.FAILED)
PROMPT_CHARS = 200  # of the prompt quoted in the mail
ATTEMPTS = 5
BACKOFF_S = 30.0  # before the second attempt; four times that before each next one
POLL_S = 5.0  # how often the outbox is looked at (a mail goes within this of a job's end)

_ROWS_TABLE = cast(Table, models.JobMailOutbox.__table__)
_JOBS = cast(Table, models.Job.__table__)
ROWS = outbox.Statements.of(_ROWS_TABLE)
_DUE = (
    select(*_ROWS_TABLE.c)
    .where(
        _ROWS_TABLE.c.next_at <= bindparam("b_now"),
        _ROWS_TABLE.c.claimed_until <= bindparam("b_now"),
    )
    .order_by(_ROWS_TABLE.c.next_at, _ROWS_TABLE.c.id)
    .limit(bindparam("b_limit"))
)
_SENT = (
    update(_JOBS).where(_JOBS.c.id == bindparam("b_job_id")).values(notified_at=bindparam("b_now"))
)


def mail_for(job: models.Job | None, user: models.User | None, min_wait_s: float) -> bool:
    """Whether the job's owner gets its mail (checked again when it is sent: the owner
    may have changed their mind, or lost their address, meanwhile)."""
    if job is None or job.state not in NOTIFIED_STATES or job.finished_at is None:
        return False
    if job.notified_at is not None or job.finished_at - job.created_at < min_wait_s:
        return False
    return (
        user is not None
        and user.notify_email
        and user.email is not None
        and user.email_verified_at is not None
        and not user.banned
    )


class JobMails:
    """Sends the outbox's mails: at most ``SMTP_CONNECTIONS`` at a time per process."""

    LEASE_S = 120.0  # an attempt is bounded by smtp_timeout_s (20 s by default)

    def __init__(self, farm: Farm, mailer: Mailer) -> None:
        self.farm = farm
        self.mailer = mailer
        self.backoff_s = BACKOFF_S
        self.sent = 0
        self.given_up = 0
        lease = max(self.LEASE_S, 2 * mailer.settings.smtp_timeout_s + 30)
        self.pump = outbox.Pump(farm, "job mail", _DUE, ROWS, self._handle, SMTP_CONNECTIONS, lease)
        # Looked for every few seconds, not woken by every job's end: most ends have no
        # mail, and a claim per end would be a write transaction per job on the hot path.
        # The mail only goes for jobs that waited minutes (notify_after_s) anyway.
        self.pump.poll_s = POLL_S
        self._changed = asyncio.Condition()

    async def start(self) -> None:
        await self.pump.start()

    async def stop(self) -> None:
        await self.pump.stop()

    async def _handle(self, row: Any, claim: str) -> None:
        async with self.farm.sessions() as db:
            job = await db.get(models.Job, row.job_id)
            user = None if job is None else await db.get(models.User, job.user_id)
        min_wait = self.mailer.settings.notify_after_s
        if not self.mailer.enabled or not mail_for(job, user, min_wait):
            await self.pump.drop(row.id, claim)
            return
        assert job is not None and user is not None
        attempts = row.attempts + 1
        try:
            await self.mailer.send(job_mail(job, user, self.mailer.settings.public_url))
        except Exception as exc:  # the server (MailError), or a bug: counted either way
            if not isinstance(exc, MailError):
                log.exception("the mail for job %s could not be made", job.id)
            if attempts >= ATTEMPTS:
                log.warning(
                    "gave up the mail for job %s after %d attempts: %s", job.id, attempts, exc
                )
                await self.pump.drop(row.id, claim)
                await self._count(given_up=1)
                return
            log.info("mail for job %s not sent (attempt %d): %s", job.id, attempts, exc)
            await self.pump.again(row.id, claim, attempts, self.backoff_s * 4 ** (attempts - 1))
            return
        now = self.farm.clock()

        def sent(db: Connection) -> None:
            if db.execute(ROWS.done, outbox.mine(row.id, claim)).rowcount:
                db.execute(_SENT, {"b_job_id": row.job_id, "b_now": now})

        await self.farm.writer.run(sent)
        await self._count(sent=1)

    async def _count(self, sent: int = 0, given_up: int = 0) -> None:
        async with self._changed:
            self.sent += sent
            self.given_up += given_up
            self._changed.notify_all()

    async def wait_done(self, count: int) -> None:
        """Until ``count`` mails were sent or given up in all (bound it with a timeout)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.sent + self.given_up >= count)


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
