"""Account administration shared by the admin console and ``shapefarm admin``:
the user search, tier changes and bans, each validated, audited and committed in one place."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

import scheduler
from coordinator.farm.engine import Farm
from coordinator.i18n import N_, gettext
from coordinator.services import admin_agents, audit, jobs, login_sessions, submission
from coordinator.services.errors import ActionError
from coordinator.services.submission import DAY_S
from coordinator.store import models
from scheduler.lifecycle import JobState

MAX_TIER_DAYS = 3650.0


class AdminActionError(ActionError):
    """An admin action that cannot be done; the message is shown to the admin."""


def check_days(days: float | None) -> float | None:
    """None (no expiry) or a number of days in (0, 3650]."""
    if days is not None and (not math.isfinite(days) or not 0 < days <= MAX_TIER_DAYS):
        raise AdminActionError(
            gettext("Days must be between 0 and %(max)s.") % {"max": f"{MAX_TIER_DAYS:g}"}
        )
    return days


def parse_days(raw: str) -> float | None:
    """Blank means no expiry; otherwise a number of days in (0, 3650]."""
    raw = raw.strip()
    if not raw:
        return None
    try:
        days = float(raw)
    except ValueError:
        raise AdminActionError(gettext("Days must be a number (blank: no expiry).")) from None
    return check_days(days)


async def assign_tier(
    db: AsyncSession,
    tiers: Mapping[str, scheduler.Tier],
    target: models.User,
    tier: str,
    days: float | None,
    actor: models.User | None,
    now: float,
    via: str = "",
) -> None:
    """Put ``target`` on ``tier`` (for ``days``, or without expiry), audited, and commit.

    ``actor`` None: the admin CLI, noted by ``via``. A running coordinator picks the
    change up through :func:`set_tier`; another process's farm on its next refresh."""
    if tier not in tiers:
        raise AdminActionError(
            gettext("Unknown tier %(tier)r; choose one of %(tiers)s.")
            % {"tier": tier, "tiers": ", ".join(tiers)}
        )
    check_days(days)
    target.tier = tier
    target.tier_expires_at = now + days * DAY_S if days is not None else None
    detail = f"{tier} " + (f"for {days:g} days" if days is not None else "without expiry")
    audit.record(db, actor, "user.tier", target.username, f"{detail} {via}".strip(), now)
    await db.commit()


async def set_tier(
    farm: Farm,
    db: AsyncSession,
    target: models.User,
    tier: str,
    days: float | None,
    actor: models.User,
) -> None:
    await assign_tier(db, farm.tiers, target, tier, days, actor, farm.clock())
    farm.refresh_user(target)
    farm.nudge()  # the new weight and caps apply to the next dispatch pass


async def set_banned(
    farm: Farm, db: AsyncSession, target: models.User, banned: bool, actor: models.User
) -> None:
    if target.id == actor.id:
        raise AdminActionError(gettext("You cannot ban yourself."))
    if target.banned == banned:
        message = (
            gettext("%(user)s is already banned.") if banned else gettext("%(user)s is not banned.")
        )
        raise AdminActionError(message % {"user": target.username})
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
            await jobs.cancel(farm, db, job, N_("cancelled: the owner's account was suspended"))


PAGE = 50
"""Users per page of the admin console's user list."""


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
    today = await submission.usage_counts(farm, db, ids, now)
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
