"""Agent enrollment: tokens are random, shown once, stored hashed, revocable."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.i18n import gettext
from coordinator.services import tokens
from coordinator.store import models

MAX_AGENT_NAME = 64


class EnrollmentError(ValueError):
    pass


async def enroll(
    db: AsyncSession, owner: models.User, name: str, now: float, approved: bool | None = None
) -> tuple[models.Agent, str]:
    """Create an agent for ``owner``; returns it and its token (shown once, never stored)."""
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
        approved=owner.is_admin if approved is None else approved,
        created_at=now,
    )
    db.add(agent)
    await db.flush()
    return agent, issued.token
