"""The public gallery (/explore), creator pages (/u/<name>), likes and reports."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from coordinator.i18n import gettext as _
from coordinator.request_context import farm_of, int_param
from coordinator.services import auth, gallery
from coordinator.store import models
from coordinator.web.base import current_user, is_htmx, redirect, render, require_user

PAGE_SIZE = 24
# Deep pages cost an OFFSET scan each; nobody pages this far by hand.
MAX_PAGE = 200
MAX_QUERY = 200


@dataclass(frozen=True)
class GalleryQuery:
    q: str = ""
    order: str = "newest"
    page: int = 1
    base: str = "/explore"

    @classmethod
    def parse(cls, params: QueryParams, base: str = "/explore") -> GalleryQuery:
        """Validate the query string; a bad value is a 400 with a clear message."""
        q = params.get("q", "").strip()
        if len(q) > MAX_QUERY:
            raise HTTPException(
                400, _("The search text is limited to %(n)d characters.") % {"n": MAX_QUERY}
            )
        order = params.get("order", "") or "newest"
        if order not in gallery.ORDERS:
            raise HTTPException(400, _("Unknown order; use newest or liked."))
        return cls(q=q, order=order, page=int_param(params, "page", 1, 1, MAX_PAGE), base=base)

    def url(self, **changes: object) -> str:
        values = {"q": self.q, "order": self.order, "page": self.page, **changes}
        kept = {k: v for k, v in values.items() if v not in ("", None, 1, "newest")}
        return self.base + (f"?{urlencode(kept)}" if kept else "")


async def _page(request: Request, creator_name: str | None) -> Response:
    farm = farm_of(request)
    base = "/explore" if creator_name is None else f"/u/{creator_name}"
    query = GalleryQuery.parse(request.query_params, base)
    async with farm.sessions() as db:
        viewer = await current_user(request, db)
        creator = None
        if creator_name is not None:
            creator = await gallery.creator_named(db, creator_name)
            if creator is None:
                raise HTTPException(404, _("No such creator."))
        cards, total = await gallery.cards(
            db,
            viewer,
            order=query.order,
            query=query.q,
            creator=creator,
            limit=PAGE_SIZE,
            offset=(query.page - 1) * PAGE_SIZE,
        )
    pages = min(MAX_PAGE, max(1, -(-total // PAGE_SIZE)))
    template = "explore.html" if creator is None else "creator.html"
    return render(
        request,
        "_partials/gallery_grid.html" if is_htmx(request) else template,
        viewer,
        cards=cards,
        total=total,
        query=query,
        pages=pages,
        creator=creator,
        orders=gallery.ORDERS,
    )


async def explore(request: Request) -> Response:
    return await _page(request, None)


async def creator_page(request: Request) -> Response:
    return await _page(request, request.path_params["name"])


async def _listed_job(db: AsyncSession, request: Request) -> models.Job:
    """The gallery model the path names; anything else (private, hidden, unfinished,
    missing) is the same 404, so nobody learns which private ids exist."""
    job = await db.get(models.Job, request.path_params["job_id"])
    if job is None or not gallery.is_listed(job):
        raise HTTPException(404, _("No such model."))
    return job


async def like(request: Request) -> Response:
    farm = farm_of(request)
    async with farm.sessions() as db:
        user = await require_user(request, db)
        await auth.check_csrf(request)
        job = await _listed_job(db, request)
        try:
            liked, count = await gallery.toggle_like(db, user, job, farm.clock())
        except gallery.GalleryError as exc:
            raise HTTPException(409, str(exc)) from None
    if not is_htmx(request):
        return redirect(request, f"/jobs/{job.id}")
    return render(
        request, "_partials/like_button.html", user, job_id=job.id, liked=liked, likes=count
    )


async def report(request: Request) -> Response:
    farm = farm_of(request)
    async with farm.sessions() as db:
        user = await require_user(request, db)
        await auth.check_csrf(request)
        job = await _listed_job(db, request)
        form = await request.form()
        try:
            reason = gallery.parse_reason(form.get("reason"))
            await gallery.report(db, user, job, reason, farm.clock())
        except gallery.GalleryError as exc:
            if not is_htmx(request):
                raise HTTPException(422, str(exc)) from None
            return render(
                request,
                "_partials/report_form.html",
                user,
                job=job,
                error=str(exc),
                reason=str(form.get("reason") or "")[: gallery.MAX_REASON],
                status_code=422,
            )
    if not is_htmx(request):
        return redirect(request, f"/jobs/{job.id}?reported=1")
    return render(request, "_partials/report_form.html", user, job=job, reported=True)


ROUTES = [
    Route("/explore", explore),
    Route("/u/{name}", creator_page),
    Route("/jobs/{job_id}/like", like, methods=["POST"]),
    Route("/jobs/{job_id}/report", report, methods=["POST"]),
]
