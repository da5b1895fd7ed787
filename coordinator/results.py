"""Accepting results and failures from agents.

A result is stored only if its bytes matched the announced sizes and sha256
(checked by the protocol layer), the GLB parses, and the (job, attempt) is the
job's current assignment to this agent. Accepting is idempotent: a re-sent
result for a job that already succeeded is acknowledged as a duplicate and
changes nothing.
"""

from __future__ import annotations

import asyncio
import logging

from coordinator import models
from coordinator.convert import InvalidModelError, inspect_glb
from coordinator.farm import AgentConn, Farm
from protocol import Failed, ResultAck, Upload
from scheduler.lifecycle import JobState

log = logging.getLogger(__name__)

CREDIT_PER_STEP = 1 / 64  # one credit for a default 64-step job


async def mark_running(farm: Farm, job_id: str, attempt: int) -> None:
    async with farm.sessions() as db:
        job = await db.get(models.Job, job_id)
        if job is not None and job.attempt == attempt and job.state == JobState.ASSIGNED:
            job.state = JobState.RUNNING
            job.started_at = farm.clock()
            await db.commit()


async def record_failure(farm: Farm, conn: AgentConn, failed: Failed) -> None:
    async with farm.sessions() as db:
        agent = await db.get(models.Agent, conn.id)
        if agent is not None:
            agent.failures += 1
        job = await db.get(models.Job, failed.job)
        if (
            not failed.retryable
            and job is not None
            and job.attempt == failed.attempt
            and (job.state in (JobState.ASSIGNED, JobState.RUNNING))
        ):
            job.state = JobState.FAILED
            job.error = f"generation failed: {failed.reason}"
            job.finished_at = farm.clock()
            job.agent_id = None
            await db.commit()
            farm.settle(failed.job)
            return
        await db.commit()
    await farm.lose(failed.job, failed.attempt, f"agent reported: {failed.reason}")


def _ack(upload: Upload, status: str, reason: str = "") -> ResultAck:
    return ResultAck(
        job=upload.result.job, attempt=upload.result.attempt, status=status, reason=reason
    )  # type: ignore[arg-type]


async def accept(farm: Farm, conn: AgentConn, upload: Upload) -> ResultAck:
    header = upload.result
    conn.session.release(header.job, header.attempt)
    kinds = [artifact.kind for artifact in header.artifacts]
    if kinds.count("glb") != 1 or len(set(kinds)) != len(kinds):
        return _ack(upload, "rejected", "a result needs exactly one glb artifact")
    blobs = dict(zip(kinds, upload.parts, strict=True))
    async with farm.sessions() as db:
        job = await db.get(models.Job, header.job)
        if job is None:
            return _ack(upload, "rejected", "no such job")
        if job.state == JobState.SUCCEEDED:
            return _ack(upload, "duplicate", "the job already has a stored result")
        if (
            job.attempt != header.attempt
            or job.agent_id != conn.id
            or job.state not in (JobState.ASSIGNED, JobState.RUNNING)
        ):
            return _ack(upload, "rejected", f"attempt {header.attempt} is no longer current")
    try:
        info = await asyncio.to_thread(inspect_glb, blobs["glb"], farm.settings.max_result_bytes)
    except InvalidModelError as exc:
        return _ack(upload, "rejected", f"invalid GLB: {exc}")
    store = farm.store
    await asyncio.to_thread(store.write, header.job, "glb", blobs["glb"])
    if "preview" in blobs:
        await asyncio.to_thread(store.write, header.job, "png", blobs["preview"])
    now = farm.clock()
    async with farm.sessions() as db, db.begin():
        job = await db.get(models.Job, header.job, with_for_update=True)
        if (
            job is None
            or job.attempt != header.attempt
            or job.state not in (JobState.ASSIGNED, JobState.RUNNING)
        ):
            # Cancelled or requeued while we checked the file; the file is
            # overwritten or deleted with the job, never shown for this attempt.
            return _ack(upload, "rejected", "the job changed while the result was checked")
        job.state = JobState.SUCCEEDED
        job.finished_at = now
        job.error = None
        job.lease_expires_at = None
        db.add(
            models.Result(
                job_id=job.id,
                attempt=header.attempt,
                agent_id=conn.id,
                glb_size=len(blobs["glb"]),
                glb_sha256=header.artifacts[kinds.index("glb")].sha256,
                has_preview="preview" in blobs,
                vertices=info.vertices,
                faces=info.faces,
                seconds=header.seconds,
                created_at=now,
            )
        )
        agent = await db.get(models.Agent, conn.id)
        if agent is not None:
            agent.jobs_done += 1
            agent.gpu_seconds += header.seconds
            owner = await db.get(models.User, agent.owner_id)
            if owner is not None:
                owner.credit += job.steps * CREDIT_PER_STEP
    farm.observe_duration(header.seconds)
    farm.settle(header.job)
    log.info("job %s attempt %d stored (%d bytes)", header.job, header.attempt, len(blobs["glb"]))
    return _ack(upload, "stored")
