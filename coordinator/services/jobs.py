"""Job services shared by the HTML views and the JSON API: who may see or change a job,
listing and search, live progress, cancel, delete, visibility and downloads.

Submitting jobs (parsing, admission, daily usage) is :mod:`coordinator.services.submission`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import NamedTuple

from sqlalchemy import delete as sa_delete
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

import scheduler
from coordinator.farm import lifecycle
from coordinator.farm.engine import Farm
from coordinator.i18n import N_, gettext
from coordinator.meshes import compact
from coordinator.meshes.convert import FORMATS
from coordinator.services.submission import DAY_S, JobRequestError
from coordinator.store import models
from coordinator.store.modelfiles import ModelFile
from scheduler.lifecycle import JobEvent, JobState, can


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
    if done.agent_id:
        # Here or through its replica; a dead agent is handled by the lease machinery.
        await farm.stop_attempt(done.agent_id, job.id, done.attempt, why)
    farm.settle(job.id)
    return True


async def export_model(
    farm: Farm, job: models.Job, result: models.Result, fmt: str, signed: bool = False
) -> ModelFile:
    """The stored model as ``fmt``, open for streaming (LookupError: no such format/file);
    ``signed``: a short-lived URL to redirect to instead, where the store makes them
    (downloads; not the viewer's GLB, which a cross-origin redirect would break).
    A model too large for a compressed copy has none (LookupError before any work).

    Conversions are cached, single-flight and limited: see ``coordinator.modelfiles``.
    A job "for 3D printing" gets its repaired STL (see ``coordinator.meshes.options``)."""
    if fmt == "meshopt" and not compact.has_copy(result.faces):
        raise LookupError(
            f"This model has {result.faces:,} faces, too many for a compressed copy "
            f"(at most {compact.MAX_FACES:,}); download the GLB."
        )
    # The GLB a result stored moments ago, kept in memory for this (one process only:
    # another replica could delete the job unseen).
    kept = farm.take_model(job.id) if fmt == "glb" and not farm.replicated else None
    return await farm.models.open(
        job.id, fmt, signed=signed, printable=bool(job.mesh_printable), kept=kept
    )


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


def download_paths(job_id: str, faces: int) -> dict[str, str]:
    """The API's download path of each format a model of ``faces`` faces has."""
    return {
        fmt: f"/api/v1/jobs/{job_id}/download/{fmt}"
        for fmt in FORMATS
        if fmt != "meshopt" or compact.has_copy(faces)
    }


def result_json(job_id: str, result: models.Result) -> dict[str, object]:
    """A stored model as the API and webhooks describe it, with its download paths."""
    return {
        "sha256": result.glb_sha256,
        "size": result.glb_size,
        "vertices": result.vertices,
        "faces": result.faces,
        "seconds": result.seconds,
        "agent_id": result.agent_id,
        "downloads": download_paths(job_id, result.faces),
        "watertight": result.watertight,  # of the STL, for a job "for 3D printing"
    }


def describe_progress(
    farm: Farm, job: models.Job, positions: Mapping[str, scheduler.QueueEstimate] | None = None
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
        progress = replace(progress, agents_online=agents_for(farm, job.model))
    return progress


def agents_for(farm: Farm, model: str) -> int:
    """Connected, approved agents that hold ``model`` (an image job's only over protocol
    v3): a queued job waits for one, and its page says so when there is none."""
    return farm.agents_with(model)


async def delete(farm: Farm, db: AsyncSession, job: models.Job) -> None:
    """Cancel the job if it is still live, then remove its rows and files."""
    await cancel(farm, db, job, N_("deleted by its owner"))
    farm.forget_final(job.id)  # reads from now on find the row gone
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
    farm.forget_final(job.id)  # reads from now on see the new visibility
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
