"""Admin console: the moderation queue (reported public models) and hidden models."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from coordinator.i18n import gettext as _
from coordinator.request_context import MAX_PAGES, farm_of, int_param
from coordinator.services import auth, moderation
from coordinator.store import models
from coordinator.web.base import redirect, render, require_admin

PAGE = 50


async def reports_page(request: Request) -> Response:
    farm = farm_of(request)
    page = int_param(request.query_params, "page", 1, 1, MAX_PAGES)
    async with farm.sessions() as db:
        admin = await require_admin(request, db)
        reports, total = await moderation.open_reports(db, limit=PAGE, offset=(page - 1) * PAGE)
        hidden = await moderation.hidden_jobs(db)
    return render(
        request,
        "admin/reports.html",
        admin,
        reports=reports,
        total=total,
        hidden=hidden,
        page=page,
        pages=max(1, -(-total // PAGE)),
    )


async def _set_hidden(request: Request, hidden: bool) -> Response:
    farm = farm_of(request)
    async with farm.sessions() as db:
        admin = await require_admin(request, db)
        await auth.check_csrf(request)
        job = await db.get(models.Job, request.path_params["job_id"])
        if job is None:
            raise HTTPException(404, _("No such model."))
        await moderation.set_hidden(farm, db, admin, job, hidden)
    return redirect(request, "/admin/reports")


async def hide(request: Request) -> Response:
    return await _set_hidden(request, True)


async def unhide(request: Request) -> Response:
    return await _set_hidden(request, False)


async def dismiss(request: Request) -> Response:
    farm = farm_of(request)
    async with farm.sessions() as db:
        admin = await require_admin(request, db)
        await auth.check_csrf(request)
        raw = request.path_params["report_id"]
        report_id = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 18 else 0
        if not await moderation.dismiss(farm, db, admin, report_id):
            raise HTTPException(404, _("No such open report."))
    return redirect(request, "/admin/reports")


ROUTES = [
    Route("/admin/reports", reports_page),
    Route("/admin/reports/{report_id}/dismiss", dismiss, methods=["POST"]),
    Route("/admin/moderation/{job_id}/hide", hide, methods=["POST"]),
    Route("/admin/moderation/{job_id}/unhide", unhide, methods=["POST"]),
]
