"""Generate, job, download and live-progress views."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from coordinator.farm.engine import Farm
from coordinator.i18n import gettext
from coordinator.meshes.convert import FORMATS
from coordinator.request_context import farm_of
from coordinator.services import auth, gallery, job_images, jobs, mesh_options, submission
from coordinator.store import models
from coordinator.web.base import current_user, is_htmx, redirect, render, require_user, sse_response
from coordinator.web.share import share_of
from protocol import limits
from scheduler.lifecycle import JobState

SSE_KEEPALIVE_S = 15.0
# Ends the stream for good: the page's sse-close="done" stops the browser reconnecting.
GONE = "event: done\ndata: gone\n\n"


async def index(request: Request) -> Response:
    farm = farm_of(request)
    async with farm.sessions() as db:
        user = await current_user(request, db)
        if user is None:
            if is_htmx(request):
                # The Recent list refreshing itself after a logout elsewhere: leave it be
                # (the landing page must not land inside the list).
                return Response(status_code=204)
            return render(request, "landing.html")
        recent = (await jobs.list_jobs(db, user, limit=10)).jobs
        results = await jobs.results_for(db, [job.id for job in recent])
    tier = farm.tiers[farm.refresh_user(user).tier]
    return render(
        request,
        # The recent list refreshes itself (htmx GET on each change of the user's jobs).
        "_partials/job_rows.html" if is_htmx(request) else "index.html",
        user,
        jobs=recent,
        results=results,
        tier=tier,
        values=dict(request.query_params),  # prefilled by "generate again" / "new variant"
        positions=farm.positions(),
    )


async def submit(request: Request) -> Response:
    try:
        return await _submit(request)
    finally:
        await request.close()  # the uploaded picture's temp file, if the form was read


async def _submit(request: Request) -> Response:
    farm = farm_of(request)
    async with farm.sessions() as db:
        if is_htmx(request) and await current_user(request, db) is None:
            # Logged out in another tab: say so where the form shows errors; the page
            # keeps the prompt (app.js) for after the login.
            return render(
                request, "_partials/submit_error.html", session_ended=True, status_code=401
            )
    try:
        await auth.check_csrf(request)
    except HTTPException as exc:
        if not is_htmx(request):
            raise
        return render(request, "_partials/submit_error.html", error=exc.detail, status_code=403)
    form = await request.form()
    async with farm.sessions() as db:
        user = await require_user(request, db)
        tier = farm.tiers[farm.refresh_user(user).tier]
        try:
            image = await _form_image(form.get("image"))
            req = submission.JobRequest.parse(dict(form), image=image)
            created = await submission.submit(farm, db, user, req)
        except (submission.JobRequestError, job_images.ImageError) as exc:
            # shown beside that field where the form has it
            error_field = "image" if isinstance(exc, job_images.ImageError) else exc.field or ""
            htmx = is_htmx(request)
            # Without JavaScript the whole page comes back: with its Recent list.
            recent = [] if htmx else (await jobs.list_jobs(db, user, limit=10)).jobs
            results = await jobs.results_for(db, [job.id for job in recent])
            return render(
                request,
                "_partials/submit_error.html" if htmx else "index.html",
                user,
                error=str(exc),
                tier=tier,
                jobs=recent,
                results=results,
                positions={} if htmx else farm.positions(),
                values={k: v for k, v in form.items() if isinstance(v, str)},
                error_field=error_field,
                status_code=422,
            )
    if is_htmx(request):
        return render(
            request,
            "_partials/job_rows.html",
            user,
            jobs=created,
            positions=farm.positions(),
        )
    return redirect(request, f"/jobs/{created[0].id}")


async def _form_image(field: object) -> job_images.InputImage | None:
    """The generate form's picture, checked and re-encoded; None if none was chosen."""
    if not isinstance(field, UploadFile) or (not field.filename and not field.size):
        return None
    data = await field.read(limits.MAX_IMAGE_UPLOAD_BYTES + 1)
    return await job_images.prepare(data)


async def _visible_job(
    request: Request,
) -> tuple[Farm, models.User | None, models.Job, models.Result | None]:
    farm = farm_of(request)
    async with farm.sessions() as db:
        user = await current_user(request, db)
        job = await jobs.get_visible(db, user, request.path_params["job_id"])
        if job is None:
            if user is None:
                raise HTTPException(404, gettext("No such model, or you need to log in to see it."))
            raise HTTPException(404, gettext("No such model."))
        result = await jobs.result_of(db, job.id)
    return farm, user, job, result


def _status(farm: Farm, job: models.Job, result: models.Result | None) -> dict[str, Any]:
    """What the job status partial renders from (the page, the partial and the SSE stream)."""
    return {
        "job": job,
        "result": result,
        "live": jobs.describe_progress(farm, job),
        "formats": FORMATS,
        "mesh": mesh_options.of_job(job),
    }


async def job_page(request: Request) -> Response:
    farm, user, job, result = await _visible_job(request)
    async with farm.sessions() as db:
        agent = await jobs.agent_name(db, result.agent_id if result else None)
        liked = bool(await gallery.liked_by(db, user, [job.id]))
        owner = await db.get(models.User, job.user_id)
    return render(
        request,
        "job.html",
        user,
        agent_name=agent,
        listed=gallery.is_listed(job),
        creator=owner.username if owner is not None else None,
        share=share_of(request, job, result, owner.username if owner is not None else None),
        liked=liked,
        reported=request.query_params.get("reported") == "1",
        mesh_query=urlencode(mesh_options.form_values(job)),  # "generate again" keeps them
        **_status(farm, job, result),
    )


async def job_status(request: Request) -> Response:
    farm, user, job, result = await _visible_job(request)
    return render(request, "_partials/job_status.html", user, **_status(farm, job, result))


async def job_events(request: Request) -> Response:
    """Server-Sent Events: the job's status partial, re-rendered on every change.

    The stream ends after ``stream_max_s`` (the browser reconnects and is authorised
    afresh) and as soon as the viewer may no longer see the job."""
    farm, user, job, _ = await _visible_job(request)
    templates = request.app.state.templates

    async def load() -> tuple[models.Job | None, models.Result | None]:
        async with farm.sessions() as db:
            return await db.get(models.Job, job.id), await jobs.result_of(db, job.id)

    async def render_status() -> str:
        # All viewers of the job share one database read per change of its row;
        # progress in between is re-rendered from memory.
        current, result = await farm.hub.shared(f"job:{job.id}", "row", load)
        if current is None or not jobs.can_view(user, current):
            return GONE
        html = templates.get_template("_partials/job_status.html").render(
            request=request, user=user, **_status(farm, current, result)
        )
        data = "".join(f"data: {line}\n" for line in html.splitlines())
        done = "event: done\ndata: finished\n\n" if JobState(current.state).terminal else ""
        return f"event: status\n{data}\n{done}"

    async def stream() -> AsyncIterator[str]:
        deadline = time.monotonic() + farm.settings.stream_max_s
        async with farm.hub.subscribe(f"job:{job.id}") as queue:
            event = await render_status()
            yield event
            while "event: done" not in event and not await request.is_disconnected():
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                try:
                    await asyncio.wait_for(queue.get(), min(SSE_KEEPALIVE_S, left))
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                while not queue.empty():  # coalesce a burst into one render
                    queue.get_nowait()
                event = await render_status()
                yield event

    return sse_response(request, user, stream)


async def cancel(request: Request) -> Response:
    await auth.check_csrf(request)
    farm = farm_of(request)
    async with farm.sessions() as db:
        user = await require_user(request, db)
        job = await jobs.get_owned(db, user, request.path_params["job_id"])
        if job is None:
            raise HTTPException(404, gettext("No such model."))
        await jobs.cancel(farm, db, job)
    return redirect(request, f"/jobs/{job.id}")


async def delete(request: Request) -> Response:
    await auth.check_csrf(request)
    farm = farm_of(request)
    async with farm.sessions() as db:
        user = await require_user(request, db)
        job = await jobs.get_owned(db, user, request.path_params["job_id"])
        if job is None:
            raise HTTPException(404, gettext("No such model."))
        await jobs.delete(farm, db, job)
    return redirect(request, "/history")


async def visibility(request: Request) -> Response:
    await auth.check_csrf(request)
    farm = farm_of(request)
    form = await request.form()
    async with farm.sessions() as db:
        user = await require_user(request, db)
        job = await jobs.get_owned(db, user, request.path_params["job_id"])
        if job is None:
            raise HTTPException(404, gettext("No such model."))
        try:
            await jobs.set_visibility(farm, db, job, jobs.parse_public(form.get("visibility")))
        except submission.JobRequestError as exc:
            raise HTTPException(400, str(exc)) from None
    return redirect(request, f"/jobs/{job.id}")


async def download(request: Request) -> Response:
    farm, _, job, result = await _visible_job(request)
    if result is None:
        raise HTTPException(404, gettext("This job has no model yet."))
    try:
        model = await jobs.export_model(farm, job, result, request.path_params["fmt"], signed=True)
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from None
    return model.response(
        {
            "Content-Disposition": f'attachment; filename="{model.filename}"',
            "Cache-Control": "private, max-age=3600",
        }
    )


async def model_file(request: Request) -> Response:
    """The GLB inline, as stored (same authorisation as downloads)."""
    return await _inline_model(request, ("glb",))


async def viewer_model(request: Request) -> Response:
    """The compressed copy <model-viewer> loads (``coordinator.meshes.compact``); the
    GLB as stored where there is no copy (too large, or a model stored before today's
    checks that cannot be converted): the viewer shows either."""
    return await _inline_model(request, ("meshopt", "glb"))


async def _inline_model(request: Request, formats: tuple[str, ...]) -> Response:
    """The first of ``formats`` the job's model has, inline; 404 with the last one's
    reason if none."""
    farm, _, job, result = await _visible_job(request)
    if result is None:
        raise HTTPException(404, gettext("This job has no model yet."))
    *preferred, last = formats
    for fmt in preferred:
        with contextlib.suppress(LookupError):
            model = await jobs.export_model(farm, job, result, fmt)
            return model.response(INLINE)
    try:
        model = await jobs.export_model(farm, job, result, last)
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from None
    return model.response(INLINE)


INLINE = {"Cache-Control": "private, max-age=3600"}  # the viewer's model files


async def input_image(request: Request) -> Response:
    """An image job's input picture (our re-encoding), to whoever may see the job."""
    farm, _, job, _ = await _visible_job(request)
    if job.image_sha256 is None:
        raise HTTPException(404, gettext("This model was not made from a picture."))
    try:
        data = await asyncio.to_thread(farm.store.read, job.id, job_images.INPUT_KIND)
    except OSError:
        raise HTTPException(404, gettext("This model was not made from a picture.")) from None
    return Response(
        data,
        media_type="image/png",
        headers={"Cache-Control": "private, max-age=3600", "ETag": f'"{job.image_sha256}"'},
    )


async def preview(request: Request) -> Response:
    farm, _, job, result = await _visible_job(request)
    if result is None or not result.has_preview:
        raise HTTPException(404, gettext("No preview."))
    try:
        data = await asyncio.to_thread(farm.store.read, job.id, "png")
    except FileNotFoundError:
        raise HTTPException(404, gettext("No preview.")) from None
    return Response(
        data, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"}
    )


ROUTES = [
    Route("/", index),
    Route("/jobs", submit, methods=["POST"]),
    Route("/jobs/{job_id}", job_page),
    Route("/jobs/{job_id}/status", job_status),
    Route("/jobs/{job_id}/events", job_events),
    Route("/jobs/{job_id}/cancel", cancel, methods=["POST"]),
    Route("/jobs/{job_id}/delete", delete, methods=["POST"]),
    Route("/jobs/{job_id}/visibility", visibility, methods=["POST"]),
    Route("/jobs/{job_id}/model.glb", model_file),
    Route("/jobs/{job_id}/model.meshopt.glb", viewer_model),
    Route("/jobs/{job_id}/preview.png", preview),
    Route("/jobs/{job_id}/input.png", input_image),
    Route("/jobs/{job_id}/download/{fmt}", download),
]
