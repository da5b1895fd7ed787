"""The subscription life cycle: one record per user, changed only here.

Provider webhooks arrive as BillingEvents (services.payments) and go through
:func:`apply_event`: each event id is stored, so a replay changes nothing; an
event older than the newest one applied (``event_at``) changes no status, only
what only grows (the paid period end), so out-of-order delivery is harmless.
Downgrades wait for the period end (``pending_tier``); a failed renewal leaves
the tier in place for the grace period (see services.entitlement); the
:func:`sweep` marks what ran out and re-prioritises the queued jobs of users
whose effective tier changed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

import scheduler
from coordinator.farm.engine import Farm
from coordinator.i18n import gettext as _
from coordinator.services import audit, payments
from coordinator.services.entitlement import (
    ACTIVE,
    CANCELLED,
    EXPIRED,
    NOT_RENEWING,
    PAST_DUE,
    subscription_tier,
    subscription_until,
)
from coordinator.store import models

log = logging.getLogger(__name__)

DAY_S = 86400.0
# A checkout gives the tier this long until its first invoice names the paid period
# (the period end only grows, so it must start short of any real one).
PROVISIONAL_S = DAY_S
SWEEP_EVERY_S = 60.0
HISTORY_SHOWN = 50


class SubscriptionError(ValueError):
    """A refused subscription change; the message is shown."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a webhook event did, logged and stored with the event id."""

    applied: bool
    note: str


def tier_of_price(tiers: dict[str, scheduler.Tier], price_id: str | None) -> str | None:
    if not price_id:
        return None
    for tier in tiers.values():
        if tier.price is not None and tier.price.price_id == price_id:
            return tier.name
    return None


def history(
    db: AsyncSession,
    user_id: int,
    kind: str,
    now: float,
    tier: str = "",
    amount: str = "",
    detail: str = "",
) -> None:
    db.add(
        models.SubscriptionEvent(
            user_id=user_id, at=now, kind=kind, tier=tier, amount=amount, detail=detail[:200]
        )
    )


async def recent_history(db: AsyncSession, user_id: int) -> list[models.SubscriptionEvent]:
    rows = await db.scalars(
        select(models.SubscriptionEvent)
        .where(models.SubscriptionEvent.user_id == user_id)
        .order_by(models.SubscriptionEvent.at.desc(), models.SubscriptionEvent.id.desc())
        .limit(HISTORY_SHOWN)
    )
    return list(rows)


async def of_user(db: AsyncSession, user_id: int) -> models.Subscription | None:
    return await db.scalar(
        select(models.Subscription).where(models.Subscription.user_id == user_id)
    )


def new_record(user_id: int, tier: str, now: float) -> models.Subscription:
    return models.Subscription(
        user_id=user_id,
        tier=tier,
        status=ACTIVE,
        cancel_at_period_end=False,
        provider="",
        event_at=0.0,
        created_at=now,
        updated_at=now,
    )


async def refresh(farm: Farm, user_ids: Iterable[int]) -> None:
    """Recompute the farm's snapshot of these users (their queued jobs' weight)."""
    ids = sorted(set(user_ids))
    if not ids:
        return
    async with farm.sessions() as db:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            for user in await db.scalars(select(models.User).where(models.User.id.in_(chunk))):
                farm.refresh_user(user)
    farm.nudge()


# -- what runs out -------------------------------------------------------------


async def sweep(farm: Farm, now: float | None = None) -> list[int]:
    """Mark subscriptions whose tier has run out as expired, apply downgrades whose
    period began, and re-snapshot every user with queued or running jobs, so their
    jobs wait under the tier they have now (admin grants with an expiry included).
    Returns the users whose subscription record changed (replica mode: only the leader
    changes records; the others only re-snapshot)."""
    now = farm.clock() if now is None else now
    grace_s = farm.settings.subscription_grace_s
    changed: list[int] = []
    if not farm.leads:  # replica mode: the leader expires them; every replica re-snapshots
        await refresh(farm, list(farm.active_owners()))
        return changed
    async with farm.sessions() as db:
        live = await db.scalars(
            select(models.Subscription).where(
                models.Subscription.status.in_([ACTIVE, PAST_DUE]),
                models.Subscription.current_period_end.is_not(None),
                models.Subscription.current_period_end <= now,
            )
        )
        for sub in live:
            until = subscription_until(sub, grace_s)
            if until is not None and now >= until:
                sub.status, sub.pending_tier, sub.updated_at = EXPIRED, None, now
                history(db, sub.user_id, "expired", now, sub.tier)
                changed.append(sub.user_id)
            elif sub.pending_tier and sub.provider in NOT_RENEWING:
                sub.tier, sub.pending_tier, sub.updated_at = sub.pending_tier, None, now
                changed.append(sub.user_id)
        await db.commit()
    # Owners of waiting and leased jobs: the only snapshots the scheduler reads.
    await refresh(farm, [*changed, *farm.active_owners()])
    return changed


async def run_sweeper(farm: Farm, every_s: float = SWEEP_EVERY_S) -> None:
    """The background task: sweep now and then, forever (cancelled at shutdown)."""
    while True:
        try:
            await sweep(farm)
        except Exception:
            log.exception("subscription sweep failed; retrying next time")
        await asyncio.sleep(every_s)


# -- grants: vouchers and admins -----------------------------------------------


def grant(
    db: AsyncSession,
    user: models.User,
    sub: models.Subscription | None,
    tier: str,
    days: float,
    source: str,
    now: float,
    grace_s: float,
) -> models.Subscription:
    """Give ``user`` ``days`` of ``tier`` (a voucher's or an admin's); refuses to touch
    a running paid subscription or a different tier that still runs."""
    if sub is not None and subscription_tier(sub, now, grace_s) is not None:
        if sub.provider not in NOT_RENEWING:
            raise SubscriptionError(_("You have a paid subscription; use this code after it ends."))
        if sub.tier != tier:
            raise SubscriptionError(
                _("Your %(plan)s plan still runs; this code is for %(other)s.")
                % {"plan": sub.tier.capitalize(), "other": tier.capitalize()}
            )
        sub.current_period_end = (sub.current_period_end or now) + days * DAY_S
    else:
        if sub is None:
            sub = new_record(user.id, tier, now)
            db.add(sub)
        sub.tier, sub.status, sub.provider, sub.pending_tier = tier, ACTIVE, source, None
        sub.cancel_at_period_end = False
        sub.provider_subscription_id = None
        sub.current_period_end = now + days * DAY_S
    sub.updated_at = now
    history(db, user.id, source, now, tier, detail=f"{days:g} days")
    return sub


async def extend(
    farm: Farm, db: AsyncSession, sub: models.Subscription, days: float, actor: models.User
) -> None:
    """An admin adds ``days`` of access (from the period end, or from now if it passed).
    For a provider's subscription this is access here only: billing is unchanged."""
    now = farm.clock()
    start = max(sub.current_period_end or now, now)
    sub.current_period_end = start + days * DAY_S
    if sub.status not in (ACTIVE, PAST_DUE):
        sub.status = ACTIVE
        if sub.provider not in NOT_RENEWING:
            sub.provider = "admin"  # the provider's subscription ended: this one does not renew
            sub.provider_subscription_id = None
    sub.updated_at = now
    history(db, sub.user_id, "extended", now, sub.tier, detail=f"{days:g} days by an admin")
    audit.record(
        db, actor, "subscription.extend", str(sub.user_id), f"{sub.tier} +{days:g} days", now
    )
    await db.commit()
    await refresh(farm, [sub.user_id])


async def cancel_now(
    farm: Farm,
    db: AsyncSession,
    sub: models.Subscription,
    actor: models.User,
    provider: payments.PaymentProvider | None,
) -> None:
    """An admin ends a subscription at once (and stops its billing at the provider)."""
    if sub.status not in (ACTIVE, PAST_DUE):
        raise SubscriptionError(_("This subscription has already ended."))
    now = farm.clock()
    if sub.provider not in NOT_RENEWING and sub.provider_subscription_id:
        if provider is None or provider.name != sub.provider:
            raise SubscriptionError(
                _("The payment provider is not configured; cancel it there first.")
            )
        await provider.cancel(sub.provider_subscription_id, at_period_end=False)
    sub.status, sub.pending_tier, sub.cancel_at_period_end, sub.updated_at = (
        CANCELLED,
        None,
        False,
        now,
    )
    history(db, sub.user_id, "cancelled", now, sub.tier, detail="by an admin")
    audit.record(db, actor, "subscription.cancel", str(sub.user_id), sub.tier, now)
    await db.commit()
    await refresh(farm, [sub.user_id])


async def cancel_at_period_end(
    farm: Farm,
    db: AsyncSession,
    sub: models.Subscription,
    provider: payments.PaymentProvider | None,
) -> None:
    """The user cancels: the paid period runs out, then the plan falls back to free."""
    if sub.status not in (ACTIVE, PAST_DUE) or sub.provider in NOT_RENEWING:
        raise SubscriptionError(_("There is no paid subscription to cancel."))
    if sub.cancel_at_period_end:
        raise SubscriptionError(_("Your subscription already ends at the end of the period."))
    if provider is None or provider.name != sub.provider or not sub.provider_subscription_id:
        raise SubscriptionError(_("Payments are not available right now; try again later."))
    await provider.cancel(sub.provider_subscription_id, at_period_end=True)
    now = farm.clock()
    sub.cancel_at_period_end, sub.updated_at = True, now
    history(db, sub.user_id, "cancel_requested", now, sub.tier)
    await db.commit()
    await refresh(farm, [sub.user_id])


async def listing(
    db: AsyncSession, status: str = "", page: int = 1, per_page: int = 50
) -> tuple[list[tuple[models.Subscription, str]], int]:
    """Subscription records with their users' names, soonest period end first."""
    where = [models.Subscription.status == status] if status else []
    total = await db.scalar(select(func.count()).select_from(models.Subscription).where(*where))
    rows = await db.execute(
        select(models.Subscription, models.User.username)
        .join(models.User, models.User.id == models.Subscription.user_id)
        .where(*where)
        .order_by(models.Subscription.current_period_end.asc(), models.Subscription.id)
        .limit(per_page)
        .offset((page - 1) * per_page)
    )
    return [(sub, name) for sub, name in rows], int(total or 0)
