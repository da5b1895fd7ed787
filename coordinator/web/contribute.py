""" "Contribute your GPU": enroll agents, see them work, revoke them, see the credit earned."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import scheduler
from coordinator.farm.engine import Farm
from coordinator.i18n import gettext
from coordinator.request_context import farm_of
from coordinator.services import admin_agents, agentcontrols, auth
from coordinator.services.enrollment import enroll_agent
from coordinator.services.errors import ActionError
from coordinator.settings import Settings
from coordinator.store import models
from coordinator.web.base import is_htmx, redirect, render, require_user

TOKEN_FILE = "~/.shapefarm-agent-token"  # noqa: S105 - a path, not a secret


# Shown instead of an address when none is configured: never the request's Host
# header, which whoever sends the request chooses.
URL_PLACEHOLDER = "wss://COORDINATOR-ADDRESS/agent/ws"


def agent_url(settings: Settings) -> str | None:
    """The WebSocket URL agents dial, from ``public_url``; None when it is not set."""
    public = settings.public_url.rstrip("/")
    if not public:
        return None
    scheme, _, rest = public.partition("://")
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/agent/ws"


def install_commands(settings: Settings) -> dict[str, str]:
    url = agent_url(settings)
    return {
        "pip": 'pip install "shapefarm[agent]" -c constraints.txt',
        "checkout": 'pip install -e ".[agent]"',
        "run": f"shapefarm-agent --url {url or URL_PLACEHOLDER} --token-file {TOKEN_FILE}",
        "token_file": TOKEN_FILE,
        "configured": "yes" if url else "",
    }


async def _context(
    request: Request, farm: Farm, db: AsyncSession, user: models.User
) -> dict[str, Any]:
    return {
        "agents": await admin_agents.list_agents(farm, db, owner_id=user.id),
        "credit": user.credit,
        "weight": scheduler.user_weight(user.credit),
        "credit_per_weight": scheduler.CREDIT_PER_WEIGHT,
        "max_weight": 1 + scheduler.MAX_CREDIT_BOOST,
        "commands": install_commands(farm.settings),
    }


async def contribute_page(request: Request) -> Response:
    farm = farm_of(request)
    async with farm.sessions() as db:
        user = await require_user(request, db)
        context = await _context(request, farm, db, user)
    return render(request, "contribute.html", user, **context)


async def agents_partial(request: Request) -> Response:
    """The agent table alone, polled by the page to show online state live."""
    farm = farm_of(request)
    async with farm.sessions() as db:
        user = await require_user(request, db)
        agents = await admin_agents.list_agents(farm, db, owner_id=user.id)
    return render(request, "_partials/contribute_agents.html", user, agents=agents)


async def create_agent(request: Request) -> Response:
    await auth.check_csrf(request)
    farm = farm_of(request)
    form = await request.form()
    async with farm.sessions() as db:
        user = await require_user(request, db)
        name = str(form.get("name") or "")
        try:
            enrolled = await enroll_agent(db, farm.settings, user, name, farm.clock(), actor=user)
        except ActionError as exc:
            context = await _context(request, farm, db, user)
            return render(request, "contribute.html", user, 422, error=str(exc), **context)
        farm.hub.publish("farm")
        context = await _context(request, farm, db, user)
    # The token is in this response only: never cache it, never store it.
    response = render(
        request, "contribute.html", user, token=enrolled.token, new_agent=enrolled.agent, **context
    )
    response.headers["Cache-Control"] = "no-store"
    return response


async def revoke_agent(request: Request) -> Response:
    await auth.check_csrf(request)
    farm = farm_of(request)
    async with farm.sessions() as db:
        user = await require_user(request, db)
        agent = await admin_agents.get_agent(db, request.path_params["agent_id"])
        if agent is None or agent.owner_id != user.id:
            raise HTTPException(404, gettext("No such agent among yours."))
        try:
            await admin_agents.revoke(farm, db, agent, user)
        except ActionError as exc:
            raise HTTPException(409, str(exc)) from None
    if is_htmx(request):
        return await agents_partial(request)
    return redirect(request, "/contribute")


async def _control(request: Request, action: str) -> Response:
    """Pause or resume one of the user's own agents (owner controls, protocol v2)."""
    await auth.check_csrf(request)
    farm = farm_of(request)
    form = await request.form()
    batch = str(form.get("batch") or "finish")
    if batch not in ("finish", "cancel"):
        raise HTTPException(422, "Choose whether to finish or cancel the running batch.")
    async with farm.sessions() as db:
        user = await require_user(request, db)
        agent = await admin_agents.get_agent(db, request.path_params["agent_id"])
        if agent is None or agent.owner_id != user.id:
            raise HTTPException(404, "No such agent among yours.")
        try:
            if action == "pause":
                await agentcontrols.pause(farm, db, agent, user, cancel=batch == "cancel")
            else:
                await agentcontrols.resume(farm, db, agent, user)
        except admin_agents.AgentControlError as exc:
            raise HTTPException(409, str(exc)) from None
    if is_htmx(request):
        return await agents_partial(request)
    return redirect(request, "/contribute")


async def pause_agent(request: Request) -> Response:
    return await _control(request, "pause")


async def resume_agent(request: Request) -> Response:
    return await _control(request, "resume")


ROUTES = [
    Route("/contribute", contribute_page),
    Route("/contribute/agents", agents_partial),
    Route("/contribute/agents", create_agent, methods=["POST"]),
    Route("/contribute/agents/{agent_id}/revoke", revoke_agent, methods=["POST"]),
    Route("/contribute/agents/{agent_id}/pause", pause_agent, methods=["POST"]),
    Route("/contribute/agents/{agent_id}/resume", resume_agent, methods=["POST"]),
]
