"""Admin console: the live farm dashboard, agents, the audit log; users and jobs live in
:mod:`coordinator.admin_users` and :mod:`coordinator.admin_jobs`.

Every route answers 403 to a logged-in non-admin (``require_admin``) and sends
anonymous visitors to the login page. Live parts poll a partial every few
seconds (``hx-trigger="every 3s"``) rather than following the ``farm`` event
topic, which fires on every progress step of every job.
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from coordinator.i18n import gettext
from coordinator.request_context import MAX_PAGES, farm_of, int_param
from coordinator.services import admin_agents, audit, auth
from coordinator.services.errors import ActionError
from coordinator.web import admin_billing, admin_jobs, admin_reports, admin_users, stats
from coordinator.web.base import is_htmx, redirect, render, require_admin

AUDIT_PAGE = 100


async def dashboard(request: Request) -> Response:
    farm = farm_of(request)
    async with farm.sessions() as db:
        admin = await require_admin(request, db)
        context: dict[str, Any] = {
            "totals": await stats.totals(farm, db),
            "waits": await stats.waits_by_tier(farm, db),
            "per_hour": await stats.jobs_last_hour(db, farm.clock()),
            "by_state": await stats.jobs_by_state(db),
            "connected": len(farm.agents),
        }
    template = "_partials/admin_dashboard.html" if is_htmx(request) else "admin/dashboard.html"
    return render(request, template, admin, **context)


async def agents_page(request: Request) -> Response:
    farm = farm_of(request)
    async with farm.sessions() as db:
        admin = await require_admin(request, db)
        agents = await admin_agents.list_agents(farm, db)
    template = "_partials/admin_agents.html" if is_htmx(request) else "admin/agents.html"
    return render(request, template, admin, agents=agents)


async def agent_action(request: Request) -> Response:
    farm = farm_of(request)
    async with farm.sessions() as db:
        admin = await require_admin(request, db)
        await auth.check_csrf(request)
        action = admin_agents.ACTIONS.get(request.path_params["action"])
        if action is None:
            raise HTTPException(
                404, f"Unknown agent action; use {', '.join(admin_agents.ACTIONS)}."
            )
        agent = await admin_agents.get_agent(db, request.path_params["agent_id"])
        if agent is None:
            raise HTTPException(404, gettext("No such agent."))
        try:
            await action(farm, db, agent, admin)
        except ActionError as exc:
            raise HTTPException(409, str(exc)) from None
    if is_htmx(request):
        return await agents_page(request)
    return redirect(request, "/admin/agents")


async def audit_page(request: Request) -> Response:
    farm = farm_of(request)
    action = request.query_params.get("action", "").strip()[:64]
    page = int_param(request.query_params, "page", 1, 1, MAX_PAGES)
    async with farm.sessions() as db:
        admin = await require_admin(request, db)
        entries, total = await audit.recent(
            db, limit=AUDIT_PAGE, offset=(page - 1) * AUDIT_PAGE, action=action
        )
    return render(
        request,
        "admin/audit.html",
        admin,
        entries=entries,
        total=total,
        action=action,
        page=page,
        pages=max(1, -(-total // AUDIT_PAGE)),
    )


ROUTES = [
    Route("/admin", dashboard),
    Route("/admin/agents", agents_page),
    Route("/admin/agents/{agent_id}/{action}", agent_action, methods=["POST"]),
    Route("/admin/audit", audit_page),
    *admin_users.ROUTES,
    *admin_jobs.ROUTES,
    *admin_billing.ROUTES,
    *admin_reports.ROUTES,
]
