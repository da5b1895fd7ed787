"""Per-user API keys: ``sfk.<id>.<secret>``, shown once, stored as SHA-256."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.i18n import gettext, ngettext
from coordinator.services import tokens
from coordinator.store import models

MAX_KEYS = 20
LAST_USED_RESOLUTION_S = 60.0


class ApiKeyError(ValueError):
    pass


async def create(
    db: AsyncSession, user: models.User, name: str, now: float
) -> tuple[models.ApiKey, str]:
    name = name.strip() or gettext("API key")
    if len(name) > 64:
        raise ApiKeyError(gettext("Key names are at most 64 characters."))
    count = len(
        (await db.scalars(select(models.ApiKey.id).where(models.ApiKey.user_id == user.id))).all()
    )
    if count >= MAX_KEYS:
        raise ApiKeyError(
            ngettext(
                "You have %(num)s key already; revoke one first.",
                "You have %(num)s keys already; revoke one first.",
                MAX_KEYS,
            )
            % {"num": MAX_KEYS}
        )
    issued = tokens.issue(tokens.API_KEY_PREFIX)
    key = models.ApiKey(
        id=issued.id, user_id=user.id, name=name, key_hash=issued.secret_hash, created_at=now
    )
    db.add(key)
    await db.flush()
    return key, issued.token


async def authenticate(
    db: AsyncSession, token: str, now: float, *, suspended_too: bool = False
) -> models.User | None:
    """The key's user, or None for a bad or revoked key, or (unless ``suspended_too``:
    the caller then says so itself) for a suspended account."""
    parts = tokens.parse(token, tokens.API_KEY_PREFIX)
    if parts is None:
        return None
    key = await db.get(models.ApiKey, parts.id)
    if key is None or not tokens.matches(key.key_hash, parts.secret):
        return None
    user = await db.get(models.User, key.user_id)
    if user is None or (user.banned and not suspended_too):
        return None
    # "Last used" is for people, to the minute: writing it on every request
    # would put a database write on every API call.
    if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION_S:
        key.last_used_at = now
    return user


async def revoke(db: AsyncSession, user: models.User, key_id: str) -> bool:
    key = await db.get(models.ApiKey, key_id)
    if key is None or key.user_id != user.id:
        return False
    await db.delete(key)
    return True


async def revoke_all(db: AsyncSession, user_id: int) -> None:
    """Revoke every key of the user (the "revoke all" button, a password change or reset)."""
    await db.execute(delete(models.ApiKey).where(models.ApiKey.user_id == user_id))
