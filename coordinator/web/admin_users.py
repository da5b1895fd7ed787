"""Admin console: users (search, tier and expiry, ban/unban, usage)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from coordinator.i18n import gettext
from coordinator.request_context import MAX_PAGES, farm_of, int_param
from coordinator.services import auth
from coordinator.services.admin_users import PAGE, parse_days, search_users, set_banned, set_tier
from coordinator.services.errors import ActionError
from coordinator.store import models
from coordinator.web.base import redirect, render, require_admin


async def users_page(request: Request) -> Response:
    farm = farm_of(request)
    query = request.query_params.get("q", "").strip()[:100]
    page = int_param(request.query_params, "page", 1, 1, MAX_PAGES)
    async with farm.sessions() as db:
        admin = await require_admin(request, db)
        rows, total = await search_users(farm, db, query, page)
    return render(
        request,
        "admin/users.html",
        admin,
        rows=rows,
        total=total,
        query=query,
        page=page,
        pages=max(1, -(-total // PAGE)),
        tiers=sorted(farm.tiers.values(), key=lambda t: t.rank),
    )


async def _target(request: Request, db: AsyncSession) -> tuple[models.User, models.User]:
    admin = await require_admin(request, db)
    await auth.check_csrf(request)
    target = await db.get(models.User, request.path_params["user_id"])
    if target is None:
        raise HTTPException(404, gettext("No such user."))
    return admin, target


async def change_tier(request: Request) -> Response:
    farm = farm_of(request)
    form = await request.form()
    async with farm.sessions() as db:
        admin, target = await _target(request, db)
        try:
            days = parse_days(str(form.get("days") or ""))
            await set_tier(farm, db, target, str(form.get("tier") or ""), days, admin)
        except ActionError as exc:
            raise HTTPException(422, str(exc)) from None
    return redirect(request, f"/admin/users?q={target.username}")


async def _ban(request: Request, banned: bool) -> Response:
    farm = farm_of(request)
    async with farm.sessions() as db:
        admin, target = await _target(request, db)
        try:
            await set_banned(farm, db, target, banned, admin)
        except ActionError as exc:
            raise HTTPException(409, str(exc)) from None
    return redirect(request, f"/admin/users?q={target.username}")


async def ban(request: Request) -> Response:
    return await _ban(request, True)


async def unban(request: Request) -> Response:
    return await _ban(request, False)


ROUTES = [
    Route("/admin/users", users_page),
    Route("/admin/users/{user_id:int}/tier", change_tier, methods=["POST"]),
    Route("/admin/users/{user_id:int}/ban", ban, methods=["POST"]),
    Route("/admin/users/{user_id:int}/unban", unban, methods=["POST"]),
]
