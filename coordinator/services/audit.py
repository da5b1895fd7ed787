"""The audit log: who did what to whom, for admin actions and enrollment events."""

from __future__ import annotations

import time
from typing import NamedTuple

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.store import models

MAX_DETAIL = 2000


def record(
    db: AsyncSession,
    actor: models.User | None,
    action: str,
    target: str = "",
    detail: str = "",
    now: float | None = None,
) -> models.AuditEntry:
    """Add an entry to ``db``'s transaction; it is written with the change it describes."""
    entry = models.AuditEntry(
        at=time.time() if now is None else now,
        actor_id=actor.id if actor is not None else None,
        action=action,
        target=target[:200],
        detail=detail[:MAX_DETAIL],
    )
    db.add(entry)
    return entry


class AuditRow(NamedTuple):
    entry: models.AuditEntry
    actor: str | None  # the acting user's name; None for the CLI or a deleted account


class AuditPage(NamedTuple):
    rows: list[AuditRow]
    total: int


async def recent(
    db: AsyncSession, *, limit: int = 50, offset: int = 0, action: str = ""
) -> AuditPage:
    """Newest entries first, each with its actor's username; ``action`` filters by prefix."""
    where = []
    if action:
        escaped = action.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.append(models.AuditEntry.action.like(f"{escaped}%", escape="\\"))
    total = await db.scalar(select(func.count()).select_from(models.AuditEntry).where(*where))
    rows = await db.execute(
        select(models.AuditEntry, models.User.username)
        .outerjoin(models.User, models.User.id == models.AuditEntry.actor_id)
        .where(*where)
        .order_by(models.AuditEntry.at.desc(), models.AuditEntry.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return AuditPage([AuditRow(entry, name) for entry, name in rows], int(total or 0))
