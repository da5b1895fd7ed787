"""Agent enrollment: tokens are random, shown once, stored hashed, revocable.

One path for the volunteer page, the admin console and ``shapefarm admin
issue-token``: the same name check, the same per-owner limit, the same
approval rule and an audit entry."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.i18n import gettext, ngettext
from coordinator.services import audit, tokens
from coordinator.services.errors import ActionError
from coordinator.settings import Settings
from coordinator.store import models

MAX_AGENT_NAME = 64
MAX_ACTIVE_AGENTS = 20  # per user; bounds what one account can enroll


class EnrollmentError(ActionError):
    pass


@dataclass(frozen=True)
class Enrolled:
    agent: models.Agent
    token: str  # shown once, never stored


async def enroll(
    db: AsyncSession, owner: models.User, name: str, now: float, approved: bool
) -> tuple[models.Agent, str]:
    """Add an agent row for ``owner`` (not committed); returns it and its token.

    The bare step, without limit or audit: for provisioning (tests, benchmarks);
    every user-facing path goes through :func:`enroll_agent`."""
    name = name.strip()
    if not name or len(name) > MAX_AGENT_NAME:
        raise EnrollmentError(
            gettext("Give the agent a name of 1–%(max)s characters.") % {"max": MAX_AGENT_NAME}
        )
    issued = tokens.issue(tokens.AGENT_PREFIX)
    agent = models.Agent(
        id=issued.id,
        owner_id=owner.id,
        name=name,
        token_hash=issued.secret_hash,
        approved=approved,
        created_at=now,
    )
    db.add(agent)
    await db.flush()
    return agent, issued.token


async def enroll_agent(
    db: AsyncSession,
    settings: Settings,
    owner: models.User,
    name: str,
    now: float,
    *,
    actor: models.User | None,
    approved: bool | None = None,
    via: str = "",
) -> Enrolled:
    """Enroll an agent for ``owner`` within the per-owner limit, audited, and commit.

    ``approved`` None: the configured rule (an admin's own agents are approved
    when ``auto_approve_admin_agents`` is set; others wait for an admin).
    ``actor`` None: the admin CLI; ``via`` is noted in the audit entry."""
    active = await db.scalar(
        select(func.count())
        .select_from(models.Agent)
        .where(models.Agent.owner_id == owner.id, models.Agent.revoked.is_(False))
    )
    if (active or 0) >= MAX_ACTIVE_AGENTS:
        raise EnrollmentError(
            ngettext(
                "You have %(num)s active agent; revoke one before enrolling another.",
                "You have %(num)s active agents; revoke one before enrolling another.",
                MAX_ACTIVE_AGENTS,
            )
            % {"num": MAX_ACTIVE_AGENTS}
        )
    by_rule = approved is None
    if approved is None:
        approved = owner.is_admin and settings.auto_approve_admin_agents
    agent, token = await enroll(db, owner, name, now, approved)
    detail = f"{agent.name!r} for {owner.username}"
    if approved:
        detail += " (auto-approved)" if by_rule else " (approved)"
    audit.record(db, actor, "agent.enroll", agent.id, f"{detail} {via}".strip(), now)
    await db.commit()
    return Enrolled(agent, token)
