"""The plans page: the configured tiers side by side."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import scheduler
from coordinator.request_context import farm_of
from coordinator.web.base import current_user, render

# Tiers an admin grants to staff, not plans anyone can choose.
HIDDEN_TIERS = frozenset({"admin"})


def visible_tiers(tiers: dict[str, scheduler.Tier], own: str | None) -> list[scheduler.Tier]:
    """The tiers to show, low to high rank; a hidden tier shows only to its members."""
    shown = [t for t in tiers.values() if t.name not in HIDDEN_TIERS or t.name == own]
    return sorted(shown, key=lambda t: t.rank)


async def plans_page(request: Request) -> Response:
    farm = farm_of(request)
    async with farm.sessions() as db:
        user = await current_user(request, db)
    own = farm.refresh_user(user).tier if user is not None else None
    return render(request, "plans.html", user, tiers=visible_tiers(farm.tiers, own), own=own)


ROUTES = [Route("/plans", plans_page)]
