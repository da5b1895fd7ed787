"""A key's webhook settings, as the profile changes them: its URL, its signing secret,
and the latest deliveries to show (the engine is ``coordinator.services.api_webhooks``)."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.services.api_webhooks import Webhooks
from coordinator.services.outbound import check_url
from coordinator.store import models


async def configure(
    db: AsyncSession, hooks: Webhooks, user: models.User, key_id: str, url: str
) -> tuple[models.ApiKey, str | None]:
    """Set (or, with an empty URL, remove) a key's webhook; returns the key and the
    signing secret when a new one was made (shown once). Removing the URL keeps the
    secret: the key's jobs may still name URLs of their own."""
    key = await _own_key(db, user, key_id)
    if not url.strip():
        key.webhook_url = None
        return key, None
    key.webhook_url = check_url(url, hooks.allow_private)
    new_secret = None
    if not key.webhook_secret:
        new_secret = await replace_secret(db, user, key_id)
    hooks.users.add(user.id)
    return key, new_secret


async def replace_secret(db: AsyncSession, user: models.User, key_id: str) -> str:
    """Make (or replace) the key's signing secret; returns it (shown once). Jobs that
    end from now on are signed with it (a delivery between retries keeps the old one)."""
    key = await _own_key(db, user, key_id)
    key.webhook_secret = secret = "whsec_" + secrets.token_urlsafe(32)
    return secret


async def _own_key(db: AsyncSession, user: models.User, key_id: str) -> models.ApiKey:
    key = await db.get(models.ApiKey, key_id)
    if key is None or key.user_id != user.id:
        raise LookupError("no such API key")
    return key


async def recent(db: AsyncSession, user_id: int, per_key: int = 10) -> dict[str, list[Any]]:
    """The latest deliveries of each of the user's keys, newest first."""
    rows = await db.scalars(
        select(models.WebhookDelivery)
        .join(models.ApiKey, models.ApiKey.id == models.WebhookDelivery.api_key_id)
        .where(models.ApiKey.user_id == user_id)
        .order_by(models.WebhookDelivery.id.desc())
        .limit(per_key * 20)
    )
    found: dict[str, list[Any]] = {}
    for row in rows:
        entries = found.setdefault(row.api_key_id, [])
        if len(entries) < per_key:
            entries.append(row)
    return found
