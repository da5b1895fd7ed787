"""Every change of a job's state: the one module that writes ``jobs.state``.

Each function is a unit of work for the ``Writer`` (a synchronous SQLAlchemy
``Connection`` inside its transaction; it must not await), so every state change
takes the same write path. The statements are conditional updates whose
``WHERE state IN (...)`` and new state come from the lifecycle's transition table
(``scheduler.lifecycle``): a job that moved on meanwhile (cancelled while its
result was checked, requeued while an old attempt reports) is simply not matched,
and a unit says so by returning nothing. Statements are built once: constructing
one costs more than running it on SQLite.

A new job is inserted here too, in its initial state (``queued``): a birth, not a
transition. A job's end adds its webhooks' work and its owner's mail to their outboxes
in the same transaction (:func:`_tell_webhooks`, :func:`_tell_owner`), so no end a
webhook or a mail should tell is lost to a crash.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import (
    BindParameter,
    Connection,
    Float,
    Table,
    bindparam,
    exists,
    insert,
    literal,
    or_,
    select,
    update,
)

import scheduler
from coordinator.store import models
from coordinator.store.prepared import Prepared
from protocol import ImageRef, JobSpec, MeshOptions
from scheduler.lifecycle import JobEvent, JobState, sources, target, transition

_JOBS = cast(Table, models.Job.__table__)
_KEYS_TABLE = cast(Table, models.ApiKey.__table__)
_OUTBOX = cast(Table, models.WebhookOutbox.__table__)
_MAIL_OUTBOX = cast(Table, models.JobMailOutbox.__table__)
_USERS = cast(Table, models.User.__table__)


def _in(event: JobEvent) -> list[str]:
    return sorted(state.value for state in sources(event))


def _moving(event: JobEvent) -> tuple[list[str], str]:
    return _in(event), target(event).value


def _one_of(states: list[str]) -> list[BindParameter[str]]:
    """The states as fixed values of the statement: an ``IN`` over a plain list is an
    "expanding" parameter, re-rendered into the SQL at every execution."""
    return [literal(state, _JOBS.c.state.type) for state in states]


_ASSIGN_FROM, _ASSIGNED = _moving(JobEvent.ASSIGN)
_SPEC_COLUMNS = (
    _JOBS.c.attempt,
    _JOBS.c.prompt,
    _JOBS.c.seed,
    _JOBS.c.guidance,
    _JOBS.c.steps,
    _JOBS.c.model,
    _JOBS.c.image_sha256,
    _JOBS.c.image_size,
    _JOBS.c.mesh_target_faces,
    _JOBS.c.mesh_printable,
)
_CLAIM = Prepared(
    update(_JOBS)
    .where(_JOBS.c.id == bindparam("b_job_id"), _JOBS.c.state.in_(_one_of(_ASSIGN_FROM)))
    .values(state=_ASSIGNED, attempt=_JOBS.c.attempt + 1, agent_id=bindparam("b_agent_id"))
    .returning(*_SPEC_COLUMNS)
)
_START_FROM, _STARTED = _moving(JobEvent.START)
_START = Prepared(
    update(_JOBS)
    .where(
        _JOBS.c.id == bindparam("b_job_id"),
        _JOBS.c.attempt == bindparam("b_attempt"),
        _JOBS.c.state.in_(_one_of(_START_FROM)),
    )
    .values(state=_STARTED, started_at=bindparam("b_now"))
)
_SUCCEED_FROM, _SUCCEEDED = _moving(JobEvent.SUCCEED)
_SUCCEED = Prepared(
    update(_JOBS)
    .where(
        _JOBS.c.id == bindparam("b_job_id"),
        _JOBS.c.attempt == bindparam("b_attempt"),
        _JOBS.c.state.in_(_one_of(_SUCCEED_FROM)),
    )
    .values(state=_SUCCEEDED, finished_at=bindparam("b_now"), error=None)
    .returning(*_JOBS.c)
)
# An agent's failure of an attempt it holds: only a live attempt (a queued job
# waiting for its next attempt is not the agent's to fail).
_LIVE = _in(JobEvent.LOSE)
_FAIL_ATTEMPT = (
    update(_JOBS)
    .where(
        _JOBS.c.id == bindparam("b_job_id"),
        _JOBS.c.attempt == bindparam("b_attempt"),
        _JOBS.c.state.in_(_one_of(sorted(set(_LIVE) & set(_in(JobEvent.FAIL))))),
    )
    .values(
        state=target(JobEvent.FAIL).value,
        error=bindparam("b_error"),
        finished_at=bindparam("b_now"),
        agent_id=None,
    )
)


def _outbox_row(table: Table, source: Any, *where: Any, **fixed: object) -> Prepared:
    """``INSERT INTO table … SELECT``: a row for the job ``b_job_id`` (due now, ``b_now``,
    unclaimed, no attempts yet, plus ``fixed`` values) where ``where`` holds of ``source``
    (the jobs table, joined as the conditions need)."""
    values = {"attempts": 0, "claimed_until": 0.0, **fixed}
    now = bindparam("b_now", type_=Float)
    return Prepared(
        insert(table).from_select(
            ["job_id", "created_at", "next_at", *values],
            select(_JOBS.c.id, now, now, *(literal(v) for v in values.values()))
            .select_from(source)
            .where(_JOBS.c.id == bindparam("b_job_id"), *where),
            include_defaults=False,
        )
    )


# The job's end, for coordinator.services.api_webhooks to turn into deliveries: only a
# job submitted with a key whose webhook is set, or with a URL of its own.
_TELL_WEBHOOKS = _outbox_row(
    _OUTBOX,
    _JOBS,
    _JOBS.c.api_key_id.is_not(None),
    or_(
        _JOBS.c.webhook_url.is_not(None),
        exists().where(
            _KEYS_TABLE.c.id == _JOBS.c.api_key_id, _KEYS_TABLE.c.webhook_url.is_not(None)
        ),
    ),
    per_job=False,
)


def _tell_webhooks(db: Connection, job_id: str, now: float) -> None:
    """The job just ended (in this transaction): its webhooks will hear it."""
    _TELL_WEBHOOKS.rowcount(db, {"b_job_id": job_id, "b_now": now})


# A job that succeeded or failed, for coordinator.services.job_mail: only where the
# owner asked for such mail and has a proven address, and no mail went out for it yet
# (a requeued job that ends again is not mailed twice). The time it waited is judged
# when the mail is sent.
_TELL_MAIL = _outbox_row(
    _MAIL_OUTBOX,
    _JOBS.join(_USERS, _USERS.c.id == _JOBS.c.user_id),
    _JOBS.c.notified_at.is_(None),
    _USERS.c.notify_email.is_(True),
    _USERS.c.email.is_not(None),
    _USERS.c.email_verified_at.is_not(None),
    _USERS.c.banned.is_(False),
    ~exists().where(_MAIL_OUTBOX.c.job_id == _JOBS.c.id),
)


def _tell_owner(db: Connection, job_id: str, now: float) -> None:
    """The job just succeeded or failed (in this transaction): mail its owner if asked."""
    _TELL_MAIL.rowcount(db, {"b_job_id": job_id, "b_now": now})


def _locked(db: Connection, job_id: str, event: JobEvent) -> models.Job | None:
    """The job's row, locked, if ``event`` applies to its state now."""
    row = db.execute(
        select(*_JOBS.c)
        .where(_JOBS.c.id == job_id, _JOBS.c.state.in_(_in(event)))
        .with_for_update()
    ).first()
    return models.Job(**row._asdict()) if row is not None else None


def _write(db: Connection, job: models.Job, **changes: object) -> models.Job:
    db.execute(update(_JOBS).where(_JOBS.c.id == job.id).values(**changes))
    for key, value in changes.items():
        setattr(job, key, value)
    return job


_KEYS = tuple(c.key for c in _JOBS.c)
_CREATE = Prepared(insert(_JOBS), _KEYS)


def create(db: Connection, jobs: list[models.Job]) -> None:
    """Insert new jobs, born queued (the objects' ``state`` is set to match)."""
    for job in jobs:
        job.state = JobState.QUEUED
    _CREATE.many(db, [{key: getattr(job, key) for key in _KEYS} for job in jobs])


def refund_try(db: Connection, job_id: str, attempt: int) -> None:
    """The live attempt is being given back through no fault of the job (an agent's
    owner does not run such prompts, or paused): raise ``attempt_base`` so the coming
    requeue spends none of the job's tries."""
    db.execute(
        update(_JOBS)
        .where(_JOBS.c.id == job_id, _JOBS.c.attempt == attempt, _JOBS.c.state.in_(_LIVE))
        .values(attempt_base=_JOBS.c.attempt_base + 1)
    )


_ASSIGNED_TO = (
    select(_JOBS.c.id, _JOBS.c.user_id, *_SPEC_COLUMNS)
    .where(_JOBS.c.agent_id == bindparam("b_agent_id"), _JOBS.c.state == _ASSIGNED)
    .order_by(_JOBS.c.enqueued_at, _JOBS.c.id)
)


def _spec(job_id: str, row: Sequence[Any]) -> JobSpec:
    attempt, prompt, seed, guidance, steps, model, image_sha256, image_size, faces, printable = row
    image = None if image_sha256 is None else ImageRef(image_size, image_sha256)
    mesh = MeshOptions(faces, printable) if faces or printable else None
    return JobSpec(
        job_id, attempt, prompt, seed, guidance, steps, model,
        kind="text" if image is None else "image", image=image, mesh=mesh,
    )  # fmt: skip


def claim(db: Connection, agent_id: str, job_ids: tuple[str, ...]) -> list[JobSpec]:
    """Assign still-queued jobs to the agent; a job cancelled meanwhile is left out."""
    specs: list[JobSpec] = []
    for job_id in job_ids:
        row = _CLAIM.first(db, {"b_job_id": job_id, "b_agent_id": agent_id})
        if row is not None:
            specs.append(_spec(job_id, tuple(row.values())))
    return specs


def assigned_to(db: Connection, agent_id: str) -> list[tuple[JobSpec, int]]:
    """The jobs claimed for the agent and not started yet, with their owners (replicas:
    the replica holding the agent's socket sends them)."""
    rows = db.execute(_ASSIGNED_TO, {"b_agent_id": agent_id})
    return [(_spec(row[0], tuple(row[2:])), row[1]) for row in rows]


def start(db: Connection, job_id: str, attempt: int, now: float) -> bool:
    """The agent's first word about an attempt: the job runs (if still that attempt)."""
    params = {"b_job_id": job_id, "b_attempt": attempt, "b_now": now}
    return bool(_START.rowcount(db, params))


def succeed(db: Connection, job_id: str, attempt: int, now: float) -> dict[str, Any] | None:
    """The attempt's result is stored; returns the job's row as this update left it
    (None: it moved on)."""
    params = {"b_job_id": job_id, "b_attempt": attempt, "b_now": now}
    row = _SUCCEED.first(db, params)
    if row is not None:
        _tell_owner(db, job_id, now)
        if row["api_key_id"] is not None:  # a web job has no webhooks
            _tell_webhooks(db, job_id, now)
    return row


def fail_attempt(db: Connection, job_id: str, attempt: int, error: str, now: float) -> bool:
    """The agent failed the live attempt for good: the job fails."""
    params = {"b_job_id": job_id, "b_attempt": attempt, "b_error": error, "b_now": now}
    if not db.execute(_FAIL_ATTEMPT, params).rowcount:
        return False
    _tell_owner(db, job_id, now)
    _tell_webhooks(db, job_id, now)
    return True


def lose(
    db: Connection, job_id: str, attempt: int, why: str, now: float, max_attempts: int
) -> models.Job | None:
    """Attempt ``attempt`` will not finish: requeue the job in its old place, or fail it
    when its attempts are spent. None if that attempt is no longer the live one."""
    job = _locked(db, job_id, JobEvent.LOSE)
    if job is None or job.attempt != attempt:
        return None
    decision = scheduler.on_lost(attempt - job.attempt_base - 1, max_attempts)
    if isinstance(decision, scheduler.Fail):
        failed = _write(
            db,
            job,
            state=transition(JobState(job.state), JobEvent.FAIL),
            error=f"{decision.reason} (last: {why})",
            finished_at=now,
            agent_id=None,
        )
        _tell_owner(db, job_id, now)
        _tell_webhooks(db, job_id, now)
        return failed
    return _write(
        db,
        job,
        state=transition(JobState(job.state), JobEvent.LOSE),
        error=f"attempt {attempt} lost: {why}; retrying",
        agent_id=None,
    )


@dataclass(frozen=True)
class Cancelled:
    """A job just cancelled, and the attempt an agent may still be running."""

    agent_id: str | None
    attempt: int


def cancel(db: Connection, job_id: str, why: str, now: float) -> Cancelled | None:
    """Cancel a waiting or running job; None if it had already finished."""
    job = _locked(db, job_id, JobEvent.CANCEL)
    if job is None:
        return None
    agent_id, attempt = job.agent_id, job.attempt
    _write(
        db,
        job,
        state=transition(JobState(job.state), JobEvent.CANCEL),
        finished_at=now,
        error=why,
        agent_id=None,
    )
    _tell_webhooks(db, job_id, now)
    return Cancelled(agent_id, attempt)


def requeue(db: Connection, job_id: str, now: float) -> models.Job | None:
    """Put a failed or cancelled job back in line with fresh attempts (attempt numbers
    stay unique); None if it is not failed or cancelled (any more)."""
    job = _locked(db, job_id, JobEvent.REQUEUE)
    if job is None:
        return None
    return _write(
        db,
        job,
        state=transition(JobState(job.state), JobEvent.REQUEUE),
        attempt_base=job.attempt,
        error=None,
        agent_id=None,
        started_at=None,
        finished_at=None,
        enqueued_at=now,
    )
