"""What every API endpoint shares: the caller's key, the job it may read, the job as JSON.

The hot reads (``GET /api/v1/jobs/{id}``, downloads, waits and event streams) go
through :mod:`coordinator.services.api_reads`: the API key from the in-memory cache
and the job with its result in one prebuilt statement, no ORM session. A key the
cache refuses is looked at once more the slow way, only to tell a suspended account
(403) from a bad key (401).
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request

import scheduler
from coordinator.api.errors import ApiError, ErrorCode
from coordinator.api.schemas import InputImageView, JobView, MeshView, ProgressView, ResultView
from coordinator.farm.engine import Farm
from coordinator.request_context import farm_of
from coordinator.services import api_reads, apikeys, jobs, mesh_options
from coordinator.store import models

E = ErrorCode


def bearer(request: Request) -> str:
    """The API key the request presents (401 when there is none)."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(E.UNAUTHORIZED, "Send an API key: Authorization: Bearer sfk.…")
    return token.strip()


async def refusal(farm: Farm, token: str) -> ApiError:
    """Why the cache refused ``token``: a suspended account is told so, else a 401."""
    async with farm.sessions() as db:
        user = await apikeys.authenticate(db, token, farm.clock(), suspended_too=True)
    if user is not None and user.banned:
        return ApiError(E.ACCOUNT_SUSPENDED, "This account is suspended.")
    return ApiError(E.UNAUTHORIZED, "Invalid or revoked API key.")


async def api_user(request: Request, db: AsyncSession) -> models.User:
    """The key's owner, loaded in ``db``; notes the key on ``request.state.api_key_id``."""
    farm, token = farm_of(request), bearer(request)
    caller = await api_reads.identify(farm, token)
    user = await db.get(models.User, caller.user_id) if caller is not None else None
    if caller is None or user is None or user.banned:
        raise await refusal(farm, token)
    request.state.api_key_id = caller.key_id
    return user


async def submitter(request: Request) -> models.User:
    """:func:`api_user` without an ORM session: the owner read by the farm's Reader (one
    prebuilt statement, the subscription with it), detached; for submissions."""
    farm, token = farm_of(request), bearer(request)
    found = await api_reads.key_owner(farm, token)
    if found is None:
        raise await refusal(farm, token)
    caller, user = found
    request.state.api_key_id = caller.key_id
    return user


async def readable_job(
    request: Request, job_id: str | None = None
) -> tuple[models.Job, models.Result | None]:
    """The caller's job (admins: any) and its result: at most one database read."""
    farm, token = farm_of(request), bearer(request)
    wanted = job_id if job_id is not None else str(request.path_params["job_id"])
    try:
        _, found = await api_reads.owned_job(farm, token, wanted)
    except api_reads.NotAllowedError:
        raise await refusal(farm, token) from None
    if found is None:
        raise ApiError(E.JOB_NOT_FOUND, "No such job.")
    return found


def job_view(
    farm: Farm,
    job: models.Job,
    result: models.Result | None,
    positions: Mapping[str, scheduler.QueueEstimate] | None = None,
) -> JobView:
    progress = msgspec.convert(jobs.describe_progress(farm, job, positions).as_json(), ProgressView)
    return JobView(
        id=job.id,
        prompt=job.prompt,
        seed=job.seed,
        guidance=job.guidance,
        steps=job.steps,
        state=job.state,  # type: ignore[arg-type]  # a JobState value from the database
        attempt=job.attempt,
        public=job.public,
        error=job.error,
        created_at=job.created_at,
        finished_at=job.finished_at,
        progress=progress,
        url=f"/jobs/{job.id}",
        result=None
        if result is None
        else ResultView(
            sha256=result.glb_sha256,
            size=result.glb_size,
            vertices=result.vertices,
            faces=result.faces,
            seconds=result.seconds,
            agent_id=result.agent_id,
            downloads=jobs.download_paths(job.id, result.faces),
            watertight=result.watertight,
        ),
        kind="image" if job.image_sha256 is not None else "text",
        image=_image_view(job),
        mesh=_mesh_view(job),
        webhook_url=job.webhook_url,
    )


def _image_view(job: models.Job) -> InputImageView | None:
    if job.image_sha256 is None:
        return None
    return InputImageView(
        sha256=job.image_sha256,
        size=job.image_size or 0,
        width=job.image_width or 0,
        height=job.image_height or 0,
        url=f"/api/v1/jobs/{job.id}/image",
    )


def _mesh_view(job: models.Job) -> MeshView | None:
    choice = mesh_options.of_job(job)
    if choice.wire is None:
        return None
    return MeshView(choice.target_faces, choice.printable)


def job_json(
    farm: Farm,
    job: models.Job,
    result: models.Result | None,
    positions: Mapping[str, scheduler.QueueEstimate] | None = None,
) -> dict[str, object]:
    """:func:`job_view` as plain JSON values (event streams, webhooks)."""
    data: dict[str, object] = msgspec.to_builtins(job_view(farm, job, result, positions))
    return data
