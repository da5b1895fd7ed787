"""The JSON API under ``/api/v1``: the same services as the HTML views.

Authentication: ``Authorization: Bearer sfk.…`` (a per-user API key). No
cookies are accepted here, so the API needs no CSRF token.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import scheduler
from coordinator.farm.engine import Farm
from coordinator.request_context import farm_of, int_param
from coordinator.services import api_reads, jobs
from coordinator.store import models

MAX_PAGE = 100
MAX_OFFSET = 1_000_000  # far past any user's jobs; a bigger one is a 400, not a 500


def bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(401, "send an API key: Authorization: Bearer sfk.…")
    return token.strip()


async def api_user(request: Request, db: AsyncSession) -> models.User:
    caller = await api_reads.identify(farm_of(request), bearer(request))
    user = await db.get(models.User, caller.user_id) if caller else None
    if user is None or user.banned:
        raise HTTPException(401, "invalid or revoked API key")
    request.state.api_key_id = caller.key_id if caller else None
    return user


async def _readable_job(request: Request) -> tuple[models.Job, models.Result | None]:
    """The hot path of GET and download: no ORM session, one database read at most."""
    try:
        _, found = await api_reads.owned_job(
            farm_of(request), bearer(request), request.path_params["job_id"]
        )
    except api_reads.NotAllowedError:
        raise HTTPException(401, "invalid or revoked API key") from None
    if found is None:
        raise HTTPException(404, "no such job")
    return found


def job_json(
    farm: Farm,
    job: models.Job,
    result: models.Result | None,
    positions: dict[str, scheduler.QueueEstimate] | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": job.id,
        "prompt": job.prompt,
        "seed": job.seed,
        "guidance": job.guidance,
        "steps": job.steps,
        "state": job.state,
        "attempt": job.attempt,
        "public": job.public,
        "error": job.error,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "progress": jobs.describe_progress(farm, job, positions),
        "url": f"/jobs/{job.id}",
    }
    if result is not None:
        data["result"] = jobs.result_json(job.id, result)
    return data


async def _body(request: Request) -> dict[str, object]:
    try:
        data = json.loads(await request.body() or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise HTTPException(400, "the body must be a JSON object") from None
    if not isinstance(data, dict):
        raise HTTPException(400, "the body must be a JSON object")
    return data


async def submit(request: Request) -> Response:
    farm = farm_of(request)
    body = await _body(request)
    async with farm.sessions() as db:
        user = await api_user(request, db)
        try:
            wanted = jobs.JobRequest.parse(body)
            created = await jobs.submit(farm, db, user, wanted, request.state.api_key_id)
        except jobs.JobRequestError as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
    # One queue estimate for the whole answer: it plans over every queued job, and
    # doing it per variant held the event loop (and dispatch) for tens of ms.
    positions = farm.positions()
    answer = {"jobs": [job_json(farm, job, None, positions) for job in created]}
    return JSONResponse(answer, status_code=201)


async def list_jobs(request: Request) -> Response:
    farm = farm_of(request)
    params = request.query_params
    limit = int_param(params, "limit", 20, 1, MAX_PAGE)
    offset = int_param(params, "offset", 0, 0, MAX_OFFSET)
    async with farm.sessions() as db:
        user = await api_user(request, db)
        rows, total = await jobs.list_jobs(
            db,
            user,
            limit=limit,
            offset=offset,
            query=params.get("q", "")[:200],
            state=params.get("state", "")[:16],
        )
    positions = farm.positions()
    return JSONResponse(
        {
            "total": total,
            "limit": limit,
            "offset": offset,
            "jobs": [
                {
                    **job_json(farm, job, None),
                    "progress": jobs.describe_progress(farm, job, positions),
                }
                for job in rows
            ],
        }
    )


async def _own_job(request: Request, db: AsyncSession) -> tuple[models.User, models.Job]:
    user = await api_user(request, db)
    job = await jobs.get_owned(db, user, request.path_params["job_id"])
    if job is None:
        raise HTTPException(404, "no such job")
    return user, job


async def get_job(request: Request) -> Response:
    from coordinator.api import events  # it builds on this module

    await events.wait_param(request)  # ?wait=S: until the job finished (push for API clients)
    job, result = await _readable_job(request)
    return JSONResponse(job_json(farm_of(request), job, result))


async def cancel_job(request: Request) -> Response:
    farm = farm_of(request)
    async with farm.sessions() as db:
        _, job = await _own_job(request, db)
        if not await jobs.cancel(farm, db, job):
            return JSONResponse({"error": f"the job is {job.state} already"}, status_code=409)
    return JSONResponse(job_json(farm, job, None))


async def delete_job(request: Request) -> Response:
    farm = farm_of(request)
    async with farm.sessions() as db:
        _, job = await _own_job(request, db)
        await jobs.delete(farm, db, job)
    return Response(status_code=204)


async def set_visibility(request: Request) -> Response:
    farm = farm_of(request)
    body = await _body(request)
    async with farm.sessions() as db:
        _, job = await _own_job(request, db)
        try:
            await jobs.set_visibility(farm, db, job, jobs.parse_public(body.get("public")))
        except jobs.JobRequestError as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        result = await jobs.result_of(db, job.id)
    return JSONResponse(job_json(farm, job, result))


async def download(request: Request) -> Response:
    farm = farm_of(request)
    job, result = await _readable_job(request)
    if result is None:
        raise HTTPException(409, f"the job is {job.state}; no model yet")
    try:
        model = await jobs.export_model(farm, job, request.path_params["fmt"])
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from None
    return model.response({"Content-Disposition": f'attachment; filename="{model.filename}"'})


ROUTES = [
    Route("/api/v1/jobs", submit, methods=["POST"]),
    Route("/api/v1/jobs", list_jobs, methods=["GET"]),
    Route("/api/v1/jobs/{job_id}", get_job, methods=["GET"]),
    Route("/api/v1/jobs/{job_id}", delete_job, methods=["DELETE"]),
    Route("/api/v1/jobs/{job_id}/cancel", cancel_job, methods=["POST"]),
    Route("/api/v1/jobs/{job_id}/visibility", set_visibility, methods=["POST"]),
    Route("/api/v1/jobs/{job_id}/download/{fmt}", download, methods=["GET"]),
]
