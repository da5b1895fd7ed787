"""Accepting results and failures from agents.

A result is stored only if its bytes matched the announced sizes and sha256
(checked by the protocol layer), the GLB parses, and the (job, attempt) is the
job's current assignment to this agent. Accepting is idempotent: a re-sent
result for a job that already succeeded is acknowledged as a duplicate and
changes nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import cast

from sqlalchemy import Connection, Table, bindparam, insert, select, update

from coordinator.farm import lifecycle
from coordinator.farm.engine import Farm
from coordinator.farm.finals import FinalRow
from coordinator.farm.live import AgentConn
from coordinator.labels import FAILED_PREFIX
from coordinator.meshes import previews
from coordinator.meshes.convert import GlbInfo, InvalidModelError
from coordinator.meshes.options import MeshRequest, shape_model
from coordinator.store import models
from coordinator.store.modelfiles import glb_limits
from coordinator.store.prepared import Prepared
from coordinator.store.uploads import StoredUpload
from protocol import Failed, Result, ResultAck, Upload
from protocol.messages import AckStatus
from scheduler.lifecycle import JobState

log = logging.getLogger(__name__)

CREDIT_PER_STEP = 1 / 64  # one credit for a default 64-step job


_JOBS = cast(Table, models.Job.__table__)
_AGENTS = cast(Table, models.Agent.__table__)
_USERS = cast(Table, models.User.__table__)
_RESULTS = cast(Table, models.Result.__table__)
_ADD_RESULT = Prepared(insert(_RESULTS), tuple(c.key for c in _RESULTS.c))
_MESH = select(_JOBS.c.mesh_target_faces, _JOBS.c.mesh_printable).where(
    _JOBS.c.id == bindparam("b_job_id")
)
_AGENT_DONE = Prepared(
    update(_AGENTS)
    .where(_AGENTS.c.id == bindparam("b_agent_id"))
    .values(
        jobs_done=_AGENTS.c.jobs_done + 1,
        gpu_seconds=_AGENTS.c.gpu_seconds + bindparam("b_seconds"),
    )
)
_OWNER_CREDIT = Prepared(
    update(_USERS)
    .where(
        _USERS.c.id
        == select(_AGENTS.c.owner_id)
        .where(_AGENTS.c.id == bindparam("b_agent_id"))
        .scalar_subquery()
    )
    .values(credit=_USERS.c.credit + bindparam("b_credit"))
)


async def mark_running(farm: Farm, job_id: str, attempt: int) -> None:
    """The agent's first word about an attempt: the job is running (if still that attempt)."""
    now = farm.clock()
    await farm.writer.run(lambda db: lifecycle.start(db, job_id, attempt, now))


def _fail(db: Connection, conn_id: str, failed: Failed, now: float) -> bool:
    """Count the agent's failure; a final failure of the live attempt fails the job."""
    db.execute(
        update(models.Agent)
        .where(models.Agent.id == conn_id)
        .values(failures=models.Agent.failures + 1)
    )
    if failed.retryable:
        return False
    error = f"{FAILED_PREFIX}{failed.reason}"
    return lifecycle.fail_attempt(db, failed.job, failed.attempt, error, now)


async def record_failure(farm: Farm, conn: AgentConn, failed: Failed) -> None:
    now = farm.clock()
    if await farm.writer.run(lambda db: _fail(db, conn.id, failed, now)):
        farm.settle(failed.job)
        return
    await farm.lose(failed.job, failed.attempt, f"agent reported: {failed.reason}")


@dataclass(frozen=True, slots=True)
class Unstorable:
    """Why a result is not stored: the ``result_ack`` status and reason the agent gets."""

    status: AckStatus
    reason: str


@dataclass(frozen=True, slots=True)
class StoredModel:
    """A checked GLB as written to the blob store."""

    info: GlbInfo
    size: int
    sha256: str
    watertight: bool | None  # of the printable STL (None: the job did not ask for one)
    faces_received: int | None  # when decimated here (an agent older than protocol v3)
    glb: bytes  # as stored (kept briefly for the download that follows: farm/finals.py)


@dataclass(frozen=True, slots=True)
class ResultRow:
    """The ``results`` row of a stored model: plain values for the writer thread
    (an ORM object belongs to the session and thread that made it)."""

    job_id: str
    attempt: int
    agent_id: str
    glb_size: int
    glb_sha256: str
    has_preview: bool
    vertices: int
    faces: int
    seconds: float
    created_at: float
    watertight: bool | None
    faces_received: int | None


_RESULT_FIELDS = tuple(f.name for f in fields(ResultRow))


def _ack(upload: Upload, status: AckStatus, reason: str = "") -> ResultAck:
    return ResultAck(
        job=upload.result.job, attempt=upload.result.attempt, status=status, reason=reason
    )


def _current(db: Connection, job_id: str, attempt: int, agent_id: str) -> Unstorable | None:
    """Why ``attempt`` of the job may not deliver a result (None: it may)."""
    job = models.Job
    row = db.execute(select(job.state, job.attempt, job.agent_id).where(job.id == job_id)).first()
    if row is None:
        return Unstorable("rejected", "no such job")
    if row.state == JobState.SUCCEEDED:
        return Unstorable("duplicate", "the job already has a stored result")
    if (
        row.attempt != attempt
        or row.agent_id != agent_id
        or row.state not in (JobState.ASSIGNED, JobState.RUNNING)
    ):
        return Unstorable("rejected", f"attempt {attempt} is no longer current")
    return None


def _store(db: Connection, result: ResultRow) -> FinalRow | None:
    """Mark the job succeeded and record its result, agent and owner credit, all or
    nothing; returns the job's and the result's rows as committed (None: not stored)."""
    job = lifecycle.succeed(db, result.job_id, result.attempt, result.created_at)
    if job is None:
        # Cancelled or requeued while we checked the file; the file is
        # overwritten or deleted with the job, never shown for this attempt.
        return None
    row = {name: getattr(result, name) for name in _RESULT_FIELDS}  # asdict deep-copies
    _ADD_RESULT.many(db, [row])
    _AGENT_DONE.rowcount(db, {"b_agent_id": result.agent_id, "b_seconds": result.seconds})
    credit = job["steps"] * CREDIT_PER_STEP
    _OWNER_CREDIT.rowcount(db, {"b_agent_id": result.agent_id, "b_credit": credit})
    return FinalRow(job, row, result.created_at)


async def accept(farm: Farm, conn: AgentConn, upload: Upload) -> ResultAck:
    # The connection's intake (agentlink._Intake.take) released the assignment and woke
    # the dispatcher when the upload came in, before this check.
    header = upload.result
    kinds = [artifact.kind for artifact in header.artifacts]
    if kinds.count("glb") != 1 or len(set(kinds)) != len(kinds):
        return _ack(upload, "rejected", "a result needs exactly one glb artifact")
    lease = farm.leases.get(header.job)
    if (
        upload.sink is None
        or lease is None
        or lease.attempt != header.attempt
        or lease.agent_id != conn.id
    ):
        # Not this agent's live lease in memory: the database decides what to answer.
        refusal = await farm.writer.run(
            lambda db: _current(db, header.job, header.attempt, conn.id)
        )
        if refusal is not None:
            return _ack(upload, refusal.status, refusal.reason)
        if upload.sink is None:  # its bytes were never kept (see CoordinatorSession)
            return _ack(upload, "rejected", "not an assignment held on this connection")
    seconds = _seconds(farm, header)
    options = await _mesh_request(farm, header.job)
    try:
        blobs, stored = await asyncio.to_thread(_receive_and_store, farm, upload, options)
    except InvalidModelError as exc:
        return _ack(upload, "rejected", f"invalid GLB: {exc}")
    result = ResultRow(
        job_id=header.job,
        attempt=header.attempt,
        agent_id=conn.id,
        glb_size=stored.size,  # of the normalised GLB we store and serve
        glb_sha256=stored.sha256,
        has_preview="preview" in blobs,
        vertices=stored.info.vertices,
        faces=stored.info.faces,
        seconds=seconds,
        created_at=farm.clock(),
        watertight=stored.watertight,
        faces_received=stored.faces_received,
    )
    final = await farm.writer.run(lambda db: _store(db, result))
    if final is None:
        return _ack(upload, "rejected", "the job changed while the result was checked")
    farm.observe_duration(seconds)
    # Event streams take the rows from here, and the download that follows the model.
    farm.settle(header.job, final, stored.glb)
    log.info("job %s attempt %d stored (%d bytes)", header.job, header.attempt, len(blobs["glb"]))
    return _ack(upload, "stored")


def _seconds(farm: Farm, header: Result) -> float:
    """Generation time as the coordinator measured it, never more than the agent claims.

    Measured from the assign (or, after a coordinator restart, the agent's
    first word) to the result header, divided among the jobs of that batch.
    An agent that claims nothing (0) gets the measured time.
    """
    live = farm.progress.get(header.job)
    measured = (live.measured_s(farm.clock()) if live else None) or 0.0
    if header.seconds > measured * 1.5 + 5.0:
        log.warning(
            "job %s: agent claimed %.1f s of generation, measured %.1f s",
            header.job,
            header.seconds,
            measured,
        )
    return min(header.seconds, measured) if header.seconds > 0 else measured


def _received(upload: Upload) -> dict[str, bytes]:
    """The artifacts from the upload's sink, the preview re-encoded or dropped."""
    if not isinstance(upload.sink, StoredUpload):
        raise TypeError("a stored upload is read from its sink (coordinator/store/uploads.py)")
    blobs = upload.sink.read_parts()
    upload.sink.remove()  # read: its unlink costs this thread, not the event loop
    if "preview" in blobs:
        png = previews.reencode(blobs.pop("preview"), upload.result.job)
        if png is not None:
            blobs["preview"] = png
    return blobs


def _receive_and_store(
    farm: Farm, upload: Upload, options: MeshRequest
) -> tuple[dict[str, bytes], StoredModel]:
    """:func:`_received` then :func:`_check_and_write`, in one thread hop."""
    blobs = _received(upload)
    return blobs, _check_and_write(farm, upload.result.job, blobs, options)


def _mesh_row(db: Connection, job_id: str) -> MeshRequest:
    row = db.execute(_MESH, {"b_job_id": job_id}).first()
    return MeshRequest(row[0], bool(row[1])) if row is not None else MeshRequest()


async def _mesh_request(farm: Farm, job_id: str) -> MeshRequest:
    """The job's mesh options: kept with its lease (claim, start-up), else read (none if
    the job is gone: its result is refused later). They never change once submitted."""
    kept = farm.mesh_of(job_id)
    if kept is not None:
        return kept
    return await farm.reader.run(lambda db: _mesh_row(db, job_id))


def _check_and_write(
    farm: Farm, job_id: str, blobs: Mapping[str, bytes], options: MeshRequest
) -> StoredModel:
    """Check and normalise the GLB, apply the job's mesh options (decimation for an
    older agent, the printable STL), then write the files atomically: one thread hop."""
    shaped = shape_model(blobs["glb"], glb_limits(farm.settings), options)
    farm.store.write(job_id, "glb", shaped.glb)  # drops conversions of an older model
    if "preview" in blobs:
        farm.store.write(job_id, "png", blobs["preview"])
    if shaped.printable is not None:
        farm.store.write_with(job_id, "stl", shaped.write_stl)
    return StoredModel(
        shaped.info,
        len(shaped.glb),
        hashlib.sha256(shaped.glb).hexdigest(),
        shaped.report.watertight if shaped.report is not None else None,
        shaped.faces_received,
        shaped.glb,
    )
