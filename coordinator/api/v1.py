"""The JSON API under ``/api/v1``: the same services as the HTML views.

Authentication: ``Authorization: Bearer sfk.…`` (a per-user API key). No
cookies are accepted here, so the API needs no CSRF token. Bodies, queries and
paths are decoded by :mod:`coordinator.api.schemas`; errors are
:class:`~coordinator.api.errors.ApiError`; :data:`ENDPOINTS` describes every
endpoint once, for the router and the OpenAPI document alike.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from importlib import metadata

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response

from coordinator.api import events, openapi
from coordinator.api.decoding import decode_body, json_response, read_body, read_path, read_query
from coordinator.api.errors import ApiError, ErrorCode, ErrorDetail
from coordinator.api.schemas import (
    DownloadPath,
    JobListQuery,
    JobPage,
    JobPath,
    JobSubmission,
    JobView,
    JobWaitQuery,
    SubmittedJobs,
    VisibilityChange,
)
from coordinator.api.views import api_user, job_view, readable_job, submitter
from coordinator.i18n import gettext_noop as N_
from coordinator.meshes.convert import FORMATS
from coordinator.request_context import farm_of
from coordinator.services import api_webhooks, job_images, job_webhooks, jobs, outbound, submission
from coordinator.store import models
from coordinator.store.db import session_if_needed
from scheduler.lifecycle import JobState

E = ErrorCode


async def submit(request: Request) -> Response:
    farm = farm_of(request)
    raw = await read_body(request)
    user = await submitter(request)
    body = decode_body(raw, JobSubmission)
    key_id: str = request.state.api_key_id
    # The session only reads the user's daily usage the first time (then the farm keeps
    # it): most submissions never touch it, and an unused one costs nothing to close.
    sessions = session_if_needed(farm.sessions)
    async with sessions as db, _webhook(request, user.id, key_id, body) as hook:
        try:
            image = None if body.image is None else await job_images.prepare(body.image)
            request_ = body.to_request(image)
            created = await submission.submit(farm, db, user, request_, key_id, hook.url)
            hook.jobs = created
        except job_images.ImageError as exc:
            detail = ErrorDetail(["body", "image"], str(exc))
            raise ApiError(E(exc.code), str(exc), [detail]) from None
        except submission.QuotaExceededError as exc:
            raise ApiError(E.QUOTA_EXCEEDED, str(exc)) from None
        except submission.JobRequestError as exc:
            raise ApiError(E.JOB_REJECTED, str(exc)) from None
    # One queue estimate for the whole answer: it plans over every queued job, and
    # doing it per variant held the event loop (and dispatch) for tens of ms.
    # Not even that when every job was dispatched already (it left the queue).
    waiting = any(job.id in farm.queue for job in created)
    positions = farm.positions() if waiting else {}
    answer = SubmittedJobs([job_view(farm, job, None, positions) for job in created])
    return json_response(answer, status=201)


@contextlib.asynccontextmanager
async def _webhook(
    request: Request, user_id: int, key_id: str, body: JobSubmission
) -> AsyncIterator[job_webhooks.Claim]:
    """The submission's own webhook URL, checked and tracked (job_webhooks.PerJob.claim)."""
    hooks = api_webhooks.of(request.app.state)
    try:
        async with hooks.per_job.claim(
            user_id, key_id, body.webhook_url, hooks.allow_private
        ) as claim:
            yield claim
    except outbound.WebhookError as exc:
        raise _webhook_error(E.WEBHOOK_URL_INVALID, f"Bad webhook_url: {exc}.") from None
    except job_webhooks.SecretMissingError:
        raise _webhook_error(
            E.WEBHOOK_SECRET_MISSING,
            "This API key has no webhook secret yet, so a job's webhook could not be "
            "signed: create it on your profile page (Webhooks, under the key), then "
            "submit again.",
        ) from None
    except job_webhooks.LimitError as exc:
        raise _webhook_error(E.WEBHOOK_URLS_EXCEEDED, str(exc)) from None


def _webhook_error(code: ErrorCode, message: str) -> ApiError:
    return ApiError(code, message, [ErrorDetail(["body", "webhook_url"], message)])


async def list_jobs(request: Request) -> Response:
    farm = farm_of(request)
    async with farm.sessions() as db:
        user = await api_user(request, db)
        query = read_query(request, JobListQuery)
        rows, total = await jobs.list_jobs(
            db, user, limit=query.limit, offset=query.offset, query=query.q, state=_state(query)
        )
    positions = farm.positions()
    views = [job_view(farm, job, None, positions) for job in rows]
    return json_response(JobPage(total, query.limit, query.offset, views))


def _state(query: JobListQuery) -> str:
    return query.state if isinstance(query.state, JobState) else ""


async def _own_job(request: Request, db: AsyncSession) -> models.Job:
    user = await api_user(request, db)
    path = read_path(request, JobPath, E.JOB_NOT_FOUND)
    job = await jobs.get_owned(db, user, path.job_id)
    if job is None:
        raise ApiError(E.JOB_NOT_FOUND, "No such job.")
    return job


async def get_job(request: Request) -> Response:
    read_query(request, JobWaitQuery)  # ?wait=S: answer once the job finished (long-poll)
    await events.wait_param(request)
    job, result = await readable_job(request)
    return json_response(job_view(farm_of(request), job, result))


async def cancel_job(request: Request) -> Response:
    farm = farm_of(request)
    async with farm.sessions() as db:
        job = await _own_job(request, db)
        if not await jobs.cancel(farm, db, job):
            raise ApiError(E.JOB_FINISHED, f"The job is {job.state} already.")
    return json_response(job_view(farm, job, None))


async def delete_job(request: Request) -> Response:
    farm = farm_of(request)
    async with farm.sessions() as db:
        job = await _own_job(request, db)
        await jobs.delete(farm, db, job)
    return Response(status_code=204)


async def set_visibility(request: Request) -> Response:
    farm = farm_of(request)
    raw = await read_body(request)
    async with farm.sessions() as db:
        job = await _own_job(request, db)
        body = decode_body(raw, VisibilityChange)
        await jobs.set_visibility(farm, db, job, body.public)
        result = await jobs.result_of(db, job.id)
    return json_response(job_view(farm, job, result))


async def download(request: Request) -> Response:
    farm = farm_of(request)
    path = read_path(request, DownloadPath)
    job, result = await readable_job(request, path.job_id)
    if result is None:
        raise ApiError(E.MODEL_NOT_READY, f"The job is {job.state}; no model yet.")
    try:
        model = await jobs.export_model(farm, job, result, path.fmt, signed=True)
    except LookupError as exc:
        raise ApiError(E.NOT_FOUND, str(exc)) from None
    return model.response({"Content-Disposition": f'attachment; filename="{model.filename}"'})


async def input_image(request: Request) -> Response:
    farm = farm_of(request)
    job, _ = await readable_job(request, read_path(request, JobPath, E.JOB_NOT_FOUND).job_id)
    if job.image_sha256 is None:
        raise ApiError(E.NOT_FOUND, "This job was not made from an image.")
    try:
        data = await asyncio.to_thread(farm.store.read, job.id, job_images.INPUT_KIND)
    except OSError:
        raise ApiError(E.NOT_FOUND, "This job's image is gone.") from None
    return Response(data, media_type="image/png", headers={"ETag": f'"{job.image_sha256}"'})


async def openapi_json(request: Request) -> Response:
    return Response(DOCUMENT_BYTES, media_type="application/json")


AUTH_ERRORS = (E.UNAUTHORIZED, E.ACCOUNT_SUSPENDED)
JOB_ERRORS = (*AUTH_ERRORS, E.JOB_NOT_FOUND)
SAMPLE = "/api/v1/jobs/Xq3vN0aBcDeFgHiJ"
# One server-sent event, as its fields (docs/push.md): ``data`` is a JSON object.
SSE_EVENT = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "enum": ["queued", "progress", "finished"]},
        "data": {"type": "string", "contentMediaType": "application/json"},
        "id": {"type": "string"},
        "retry": {"type": "integer"},
    },
}
NEW_JOB = {"job_id": "$response.body#/jobs/0/id"}
SUBMIT_LINKS = {
    "getJob": {"operationId": "getJob", "parameters": NEW_JOB},
    "cancelJob": {"operationId": "cancelJob", "parameters": NEW_JOB},
    "setVisibility": {"operationId": "setVisibility", "parameters": NEW_JOB},
    "downloadModel": {"operationId": "downloadModel", "parameters": {**NEW_JOB, "fmt": "glb"}},
    "deleteJob": {"operationId": "deleteJob", "parameters": NEW_JOB},
}

ENDPOINTS: list[openapi.Endpoint] = [
    openapi.Endpoint(
        "POST", "/api/v1/jobs", submit, "submitJob", N_("Submit a prompt or an image"),
        N_("Queues one job per variant and answers them with their place in the queue. "
           "Send a prompt for text-to-3D, or an image (base64 in the JSON body, up to "
           "10 MB) for image-to-3D; an image job waits until an agent that runs the image "
           "model is online."),
        body=JobSubmission, status=201, response=SubmittedJobs,
        response_description=N_("The queued jobs."),
        errors=(E.INVALID_JSON, E.VALIDATION_FAILED, E.JOB_REJECTED, *AUTH_ERRORS,
                E.QUOTA_EXCEEDED, E.IMAGE_INVALID, E.IMAGE_UNSUPPORTED, E.IMAGE_TOO_LARGE,
                E.BODY_TOO_LARGE, E.WEBHOOK_URL_INVALID, E.WEBHOOK_SECRET_MISSING,
                E.WEBHOOK_URLS_EXCEEDED),
        example_body={"prompt": "a red chair", "steps": 32, "variants": 2}, links=SUBMIT_LINKS,
    ),
    openapi.Endpoint(
        "GET", "/api/v1/jobs", list_jobs, "listJobs", N_("List your jobs"),
        N_("Newest first, a page at a time; filter by prompt text and state."),
        query=JobListQuery, response=JobPage,
        errors=(E.VALIDATION_FAILED, *AUTH_ERRORS),
        example_path="/api/v1/jobs?limit=10&state=succeeded",
    ),
    openapi.Endpoint(
        "GET", "/api/v1/jobs/{job_id}", get_job, "getJob", N_("Get one job"),
        N_("Its state, live progress and, once it succeeded, the result and download links."),
        path_params=JobPath, query=JobWaitQuery, response=JobView,
        errors=(*JOB_ERRORS, E.VALIDATION_FAILED, E.RATE_LIMITED), example_path=SAMPLE,
    ),
    openapi.Endpoint(
        "GET", "/api/v1/jobs/{job_id}/events", events.job_events, "jobEvents",
        N_("Follow a job live"),
        N_("Server-sent events, each data a JSON object: queued (with the place in line), "
           "progress, and finished (the job with its download links), after which the "
           "stream ends. Streams share the caps of the web pages' live updates."),
        path_params=JobPath,
        response=openapi.Binary(
            ("text/event-stream",), N_("The job's events."), item_schema=SSE_EVENT
        ),
        errors=(*JOB_ERRORS, E.RATE_LIMITED), example_path=f"{SAMPLE}/events",
        extra_curl=("-N",),
    ),
    openapi.Endpoint(
        "DELETE", "/api/v1/jobs/{job_id}", delete_job, "deleteJob", N_("Delete a job"),
        N_("Cancels it if it is still waiting or running, then removes it and its files. "
           "It still counts against today's quota."),
        path_params=JobPath, status=204, response_description=N_("Deleted."),
        errors=JOB_ERRORS, example_path=SAMPLE,
    ),
    openapi.Endpoint(
        "POST", "/api/v1/jobs/{job_id}/cancel", cancel_job, "cancelJob", N_("Cancel a job"),
        N_("Stops a queued or running job."),
        path_params=JobPath, response=JobView, errors=(*JOB_ERRORS, E.JOB_FINISHED),
        example_path=f"{SAMPLE}/cancel",
    ),
    openapi.Endpoint(
        "POST", "/api/v1/jobs/{job_id}/visibility", set_visibility, "setVisibility",
        N_("Make a job public or private"),
        N_("A public job's page and model can be opened by anyone with the link."),
        body=VisibilityChange, path_params=JobPath, response=JobView,
        errors=(E.INVALID_JSON, E.VALIDATION_FAILED, *JOB_ERRORS),
        example_path=f"{SAMPLE}/visibility", example_body={"public": True},
    ),
    openapi.Endpoint(
        "GET", "/api/v1/jobs/{job_id}/download/{fmt}", download, "downloadModel",
        N_("Download the model"),
        N_("The model as GLB, or converted to OBJ, STL or PLY."),
        path_params=DownloadPath,
        response=openapi.Binary(
            tuple(f.content_type for f in FORMATS.values()), N_("The model file (an attachment).")
        ),
        errors=(*JOB_ERRORS, E.NOT_FOUND, E.MODEL_NOT_READY),
        example_path=f"{SAMPLE}/download/glb", extra_curl=("-o", "model.glb"),
    ),
    openapi.Endpoint(
        "GET", "/api/v1/jobs/{job_id}/image", input_image, "getInputImage",
        N_("Download an image job's picture"),
        N_("The picture an image-to-3D job was made from, as kept: a PNG without metadata, "
           "at most 1024 pixels a side."),
        path_params=JobPath,
        response=openapi.Binary(("image/png",), N_("The input picture.")),
        errors=(*JOB_ERRORS, E.NOT_FOUND), example_path=f"{SAMPLE}/image",
        extra_curl=("-o", "input.png"),
    ),
    openapi.Endpoint(
        "GET", "/api/v1/openapi.json", openapi_json, "getOpenApi",
        N_("This API as an OpenAPI 3.1 document"),
        response_description=N_("The OpenAPI document."), response_schema={"type": "object"},
        auth=False, tag="meta",
    ),
]  # fmt: skip


def _version() -> str:
    try:
        return metadata.version("shapefarm")
    except metadata.PackageNotFoundError:
        return "0.0.0"


DOCUMENT = openapi.document(
    ENDPOINTS,
    title="shapefarm API",
    version=_version(),
    description='Text-to-3D on volunteered GPUs. Errors: `{"error": {"code", "message", '
    '"details"}}`; the codes are listed under `x-error-codes`.',
)
DOCUMENT_BYTES = msgspec.json.encode(DOCUMENT)
ROUTES = openapi.routes(ENDPOINTS)
