"""Admin console: the queue by tier, running jobs, failures; cancel, requeue, priority.

The pages and forms only; the work is in :mod:`coordinator.services.admin_jobs`."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from coordinator.i18n import gettext
from coordinator.request_context import farm_of
from coordinator.services import api_webhooks, auth
from coordinator.services.admin_jobs import (
    cancel,
    failures,
    parse_priority,
    queue_by_tier,
    requeue,
    running,
    set_priority,
)
from coordinator.services.errors import ActionError
from coordinator.store import models
from coordinator.web.base import redirect, render, require_admin


async def jobs_page(request: Request) -> Response:
    farm = farm_of(request)
    async with farm.sessions() as db:
        admin = await require_admin(request, db)
        context: dict[str, Any] = {
            "queue": await queue_by_tier(farm, db),
            "running": await running(farm, db),
            "failures": await failures(db),
        }
    return render(request, "admin/jobs.html", admin, **context)


ACTIONS = {"cancel": cancel, "requeue": requeue}


async def _job(request: Request, db: AsyncSession) -> tuple[models.User, models.Job]:
    admin = await require_admin(request, db)
    await auth.check_csrf(request)
    job = await db.get(models.Job, request.path_params["job_id"])
    if job is None:
        raise HTTPException(404, gettext("No such job."))
    return admin, job


async def job_action(request: Request) -> Response:
    farm = farm_of(request)
    async with farm.sessions() as db:
        admin, job = await _job(request, db)
        action = ACTIONS.get(request.path_params["action"])
        if action is None:
            raise HTTPException(
                404, gettext("Unknown job action: use cancel, requeue or priority.")
            )
        try:
            await action(farm, db, job, admin)
        except ActionError as exc:
            raise HTTPException(409, str(exc)) from None
        if action is requeue:  # a job's own webhook URL hears its end again
            api_webhooks.of(request.app.state).per_job.requeued(job)
    return redirect(request, "/admin/jobs")


async def change_priority(request: Request) -> Response:
    farm = farm_of(request)
    form = await request.form()
    async with farm.sessions() as db:
        admin, job = await _job(request, db)
        try:
            priority = parse_priority(str(form.get("priority") or ""))
        except ActionError as exc:
            raise HTTPException(422, str(exc)) from None
        try:
            await set_priority(farm, db, job, priority, admin)
        except ActionError as exc:
            raise HTTPException(409, str(exc)) from None
    return redirect(request, "/admin/jobs")


ROUTES = [
    Route("/admin/jobs", jobs_page),
    Route("/admin/jobs/{job_id}/priority", change_priority, methods=["POST"]),
    Route("/admin/jobs/{job_id}/{action}", job_action, methods=["POST"]),
]
