"""Admin console: users (search, tier and expiry, ban/unban, usage)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from coordinator.farm.engine import Farm
from coordinator.request_context import MAX_PAGES, farm_of, int_param
from coordinator.services import admin_agents, audit, auth, jobs, login_sessions
from coordinator.services.jobs import DAY_S
from coordinator.store import models
from coordinator.web.base import redirect, render, require_admin
from scheduler.lifecycle import JobState

PAGE = 50
MAX_TIER_DAYS = 3650.0


class AdminActionError(ValueError):
    """An admin action that cannot be done; the message is shown to the admin."""


@dataclass(frozen=True)
class UserRow:
    user: models.User
    effective_tier: str
    usage_today: int
    jobs_total: int


async def search_users(
    farm: Farm, db: AsyncSession, query: str = "", page: int = 1
) -> tuple[list[UserRow], int]:
    """Users whose name or e-mail contains ``query``, oldest first, with their usage."""
    where = []
    if query:
        escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{escaped}%"
        where.append(
            or_(
                models.User.username.ilike(pattern, escape="\\"),
                models.User.email.ilike(pattern, escape="\\"),
            )
        )
    total = await db.scalar(select(func.count()).select_from(models.User).where(*where))
    users = list(
        await db.scalars(
            select(models.User)
            .where(*where)
            .order_by(models.User.id)
            .limit(PAGE)
            .offset((page - 1) * PAGE)
        )
    )
    ids = [user.id for user in users]
    now = farm.clock()
    today = await jobs.usage_since(db, ids, now - DAY_S)
    overall = dict(
        (
            await db.execute(
                select(models.Job.user_id, func.count())
                .where(models.Job.user_id.in_(ids))
                .group_by(models.Job.user_id)
            )
        ).all()
    )
    rows = [
        UserRow(
            user,
            farm.tier_of(user, now),
            int(today.get(user.id, 0)),
            int(overall.get(user.id, 0)),
        )
        for user in users
    ]
    return rows, int(total or 0)


def parse_days(raw: str) -> float | None:
    """Blank means no expiry; otherwise a number of days in (0, 3650]."""
    raw = raw.strip()
    if not raw:
        return None
    try:
        days = float(raw)
    except ValueError:
        raise AdminActionError("Days must be a number (blank: no expiry).") from None
    if not math.isfinite(days) or not 0 < days <= MAX_TIER_DAYS:
        raise AdminActionError(f"Days must be between 0 and {MAX_TIER_DAYS:g}.")
    return days


async def set_tier(
    farm: Farm,
    db: AsyncSession,
    target: models.User,
    tier: str,
    days: float | None,
    actor: models.User,
) -> None:
    if tier not in farm.tiers:
        raise AdminActionError(f"Unknown tier {tier!r}; choose one of {', '.join(farm.tiers)}.")
    now = farm.clock()
    target.tier = tier
    target.tier_expires_at = now + days * DAY_S if days is not None else None
    detail = f"{tier} " + (f"for {days:g} days" if days is not None else "without expiry")
    audit.record(db, actor, "user.tier", target.username, detail, now)
    await db.commit()
    farm.refresh_user(target)
    farm.wake.set()  # the new weight and caps apply to the next dispatch pass


async def set_banned(
    farm: Farm, db: AsyncSession, target: models.User, banned: bool, actor: models.User
) -> None:
    if target.id == actor.id:
        raise AdminActionError("You cannot ban yourself.")
    if target.banned == banned:
        raise AdminActionError(f"{target.username} is {'already' if banned else 'not'} banned.")
    target.banned = banned
    if banned:
        await login_sessions.end_all(db, target.id)  # every open session of theirs ends now
    audit.record(
        db, actor, "user.ban" if banned else "user.unban", target.username, "", farm.clock()
    )
    await db.commit()
    # Their agents: cut off and refused while banned (other users' prompts, GPU credit).
    if banned:
        await admin_agents.suspend_owner(farm, target.id)
    else:
        admin_agents.restore_owner(farm, target.id)
    if banned:
        # A suspended account's waiting and running work stops using volunteers' GPUs.
        live = await db.scalars(
            select(models.Job).where(
                models.Job.user_id == target.id,
                models.Job.state.in_([JobState.QUEUED, JobState.ASSIGNED, JobState.RUNNING]),
            )
        )
        for job in list(live):
            await jobs.cancel(farm, db, job, "cancelled: the owner's account was suspended")


# -- views -------------------------------------------------------------------


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
        raise HTTPException(404, "No such user.")
    return admin, target


async def change_tier(request: Request) -> Response:
    farm = farm_of(request)
    form = await request.form()
    async with farm.sessions() as db:
        admin, target = await _target(request, db)
        try:
            days = parse_days(str(form.get("days") or ""))
            await set_tier(farm, db, target, str(form.get("tier") or ""), days, admin)
        except AdminActionError as exc:
            raise HTTPException(422, str(exc)) from None
    return redirect(request, f"/admin/users?q={target.username}")


async def _ban(request: Request, banned: bool) -> Response:
    farm = farm_of(request)
    async with farm.sessions() as db:
        admin, target = await _target(request, db)
        try:
            await set_banned(farm, db, target, banned, admin)
        except AdminActionError as exc:
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
