"""Server-side login sessions: started at login, ended by logout, password change,
ban or deletion, and by idle and absolute expiry.

The signed cookie carries ``<id>.<secret>``; the table keeps the id and the
secret's SHA-256, so a copy of the database opens no session and ending the
record ends every copy of the cookie.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.services import tokens
from coordinator.store import models

# A password-holder can log in again and again; the oldest sessions make room.
MAX_PER_USER = 50
# "Last seen" is for people, to the minute: no database write on every request.
TOUCH_RESOLUTION_S = 60.0
USER_AGENT_CHARS = 200


@dataclass(frozen=True)
class Lifetime:
    idle_s: float
    absolute_s: float

    def expired(self, record: models.LoginSession, now: float) -> bool:
        return now - record.last_seen_at > self.idle_s or now - record.created_at > self.absolute_s


def session_id(token: str) -> str | None:
    """The public id of a cookie's session (what the profile's revoke buttons name)."""
    parts = tokens.parse(token)
    return parts.id if parts else None


async def prune(db: AsyncSession, now: float, lifetime: Lifetime) -> None:
    """Delete every expired session, whoever it belongs to."""
    await db.execute(
        delete(models.LoginSession).where(
            or_(
                models.LoginSession.last_seen_at < now - lifetime.idle_s,
                models.LoginSession.created_at < now - lifetime.absolute_s,
            )
        )
    )


async def start(
    db: AsyncSession, user_id: int, now: float, ip: str, user_agent: str, lifetime: Lifetime
) -> str:
    """A new session of ``user_id``; returns the token the cookie carries (commit after)."""
    await prune(db, now, lifetime)
    issued = tokens.issue(id_bytes=12)
    db.add(
        models.LoginSession(
            id=issued.id,
            user_id=user_id,
            secret_hash=issued.secret_hash,
            created_at=now,
            last_seen_at=now,
            ip=ip[:64],
            user_agent=user_agent[:USER_AGENT_CHARS],
        )
    )
    await db.flush()
    surplus = list(
        await db.scalars(
            select(models.LoginSession.id)
            .where(models.LoginSession.user_id == user_id)
            .order_by(
                models.LoginSession.last_seen_at.desc(), models.LoginSession.created_at.desc()
            )
            .offset(MAX_PER_USER)
        )
    )
    if surplus:
        await db.execute(delete(models.LoginSession).where(models.LoginSession.id.in_(surplus)))
    return issued.token


async def resolve(
    db: AsyncSession, token: str, now: float, lifetime: Lifetime
) -> models.User | None:
    """The user a cookie's token logs in, in one query; None if ended, expired or banned.

    Commits when it refreshes "last seen" or removes an expired record.
    """
    parts = tokens.parse(token)
    if parts is None:
        return None
    row = (
        await db.execute(
            select(models.LoginSession, models.User)
            .join(models.User, models.User.id == models.LoginSession.user_id)
            .where(models.LoginSession.id == parts.id)
        )
    ).first()
    if row is None:
        return None
    record, user = row
    if not tokens.matches(record.secret_hash, parts.secret):
        return None
    if lifetime.expired(record, now):
        await db.delete(record)
        await db.commit()
        return None
    if user.banned:  # a ban ends the sessions; this covers one started in the same instant
        return None
    if now - record.last_seen_at >= TOUCH_RESOLUTION_S:
        record.last_seen_at = now
        await db.commit()
    return user


async def end(db: AsyncSession, token: str) -> None:
    """End the session a cookie's token names (logout); commit after."""
    parts = tokens.parse(token)
    if parts is not None:
        await db.execute(
            delete(models.LoginSession).where(
                models.LoginSession.id == parts.id,
                models.LoginSession.secret_hash == tokens.secret_hash(parts.secret),
            )
        )


async def end_all(db: AsyncSession, user_id: int) -> None:
    """End every session of the user (log out everywhere, password change, ban); commit after."""
    await db.execute(delete(models.LoginSession).where(models.LoginSession.user_id == user_id))


async def revoke(db: AsyncSession, user_id: int, sid: str) -> bool:
    """End one of the user's own sessions by its public id; False if they have no such one."""
    record = await db.get(models.LoginSession, sid)
    if record is None or record.user_id != user_id:
        return False
    await db.delete(record)
    return True


async def active(
    db: AsyncSession, user_id: int, now: float, lifetime: Lifetime
) -> list[models.LoginSession]:
    """The user's unexpired sessions, most recently used first."""
    rows = await db.scalars(
        select(models.LoginSession)
        .where(models.LoginSession.user_id == user_id)
        .order_by(models.LoginSession.last_seen_at.desc(), models.LoginSession.created_at.desc())
    )
    return [record for record in rows if not lifetime.expired(record, now)]
