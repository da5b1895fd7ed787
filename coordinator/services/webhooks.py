"""Provider webhooks applied to subscription records, exactly once and in any order.

Each event id is stored (``provider_events``) in the transaction that applies
it, so a replay, or the same event delivered twice at once, changes nothing.
An event created before the newest one applied to a record (``event_at``)
changes no status; it may still move the paid period end, which only grows.
An event naming no known customer is logged and acknowledged (the provider
would otherwise retry it for days).
"""

from __future__ import annotations

import logging

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

import scheduler
from coordinator.farm.engine import Farm
from coordinator.services import payments
from coordinator.services.entitlement import ACTIVE, CANCELLED, EXPIRED, PAST_DUE
from coordinator.services.subscriptions import (
    PROVISIONAL_S,
    Outcome,
    history,
    new_record,
    of_user,
    refresh,
    tier_of_price,
)
from coordinator.store import models

log = logging.getLogger(__name__)


async def _find(
    db: AsyncSession, provider: str, event: payments.BillingEvent
) -> models.Subscription | None:
    if event.kind == payments.CHECKOUT_COMPLETED and event.user_id is not None:
        if await db.get(models.User, event.user_id) is None:
            return None
        return await of_user(db, event.user_id) or new_record(event.user_id, "", event.created)
    if event.kind == payments.CHECKOUT_COMPLETED:
        return None
    ids = []
    if event.subscription_id:
        ids.append(models.Subscription.provider_subscription_id == event.subscription_id)
    if event.customer_id:
        ids.append(models.Subscription.provider_customer_id == event.customer_id)
    if not ids:
        return None
    return await db.scalar(
        select(models.Subscription).where(models.Subscription.provider == provider, or_(*ids))
    )


def _apply(
    sub: models.Subscription,
    event: payments.BillingEvent,
    tiers: dict[str, scheduler.Tier],
    now: float,
) -> Outcome:
    fresh = event.created >= sub.event_at
    tier = tier_of_price(tiers, event.price_id)
    # Only a paid invoice moves the paid period (it only grows): a provider may move its
    # own period on while the renewal is unpaid, and that must not give a free period.
    paid_end = event.period_end if event.kind == payments.INVOICE_PAID else None
    if paid_end is not None and paid_end > (sub.current_period_end or 0.0):
        old_end = sub.current_period_end
        sub.current_period_end = paid_end
        if old_end is not None and sub.pending_tier and event.kind == payments.INVOICE_PAID:
            sub.tier, sub.pending_tier = sub.pending_tier, None  # the downgrade's period began
    if event.kind == payments.CHECKOUT_COMPLETED:
        if sub.provider_subscription_id != event.subscription_id or sub.status not in (
            ACTIVE,
            PAST_DUE,
        ):
            if tier is None:
                return Outcome(False, f"a checkout for an unknown price {event.price_id!r}")
            # A new subscription: the first, or one after the last ended (or a voucher's).
            sub.tier, sub.status, sub.cancel_at_period_end, sub.pending_tier = (
                tier,
                ACTIVE,
                False,
                None,
            )
            sub.event_at = event.created
            sub.current_period_end = now + PROVISIONAL_S
        sub.provider_customer_id = event.customer_id or sub.provider_customer_id
        sub.provider_subscription_id = event.subscription_id or sub.provider_subscription_id
        return Outcome(True, f"subscribed to {sub.tier}")
    if (
        event.subscription_id
        and sub.provider_subscription_id
        and event.subscription_id != sub.provider_subscription_id
    ):
        return Outcome(False, "an event of an earlier subscription")
    if not fresh:
        return Outcome(event.kind == payments.INVOICE_PAID, "older than the last event applied")
    sub.event_at = event.created
    if event.kind == payments.INVOICE_PAID:
        # A retry the provider got paid after the grace period ran out brings it back.
        late = sub.status == EXPIRED and (sub.current_period_end or 0.0) > now
        if sub.status in (ACTIVE, PAST_DUE) or late:
            sub.status = ACTIVE
        return Outcome(True, "paid")
    if event.kind == payments.PAYMENT_FAILED:
        if sub.status == ACTIVE:
            sub.status = PAST_DUE
        return Outcome(True, "payment failed")
    if event.kind == payments.SUBSCRIPTION_DELETED:
        sub.status = CANCELLED if (sub.current_period_end or 0.0) > now else EXPIRED
        sub.cancel_at_period_end, sub.pending_tier = False, None
        return Outcome(True, "ended")
    if event.kind == payments.SUBSCRIPTION_UPDATED:
        if event.status == payments.PROVIDER_ENDED:
            sub.status = CANCELLED if (sub.current_period_end or 0.0) > now else EXPIRED
        elif event.status == payments.PROVIDER_PAST_DUE:
            sub.status = PAST_DUE
        elif event.status == payments.PROVIDER_ACTIVE:
            sub.status = ACTIVE
        if event.cancel_at_period_end is not None:
            sub.cancel_at_period_end = event.cancel_at_period_end
        if tier is not None and tier != sub.tier:
            if tiers[tier].rank > tiers.get(sub.tier, tiers[scheduler.FREE_TIER]).rank:
                sub.tier, sub.pending_tier = tier, None  # an upgrade applies at once
            else:
                sub.pending_tier = tier  # a downgrade waits for the paid period to end
        elif tier == sub.tier:
            sub.pending_tier = None
        return Outcome(True, f"updated: {sub.status}")
    return Outcome(False, "not acted on")


_HISTORY_KIND = {
    payments.CHECKOUT_COMPLETED: "subscribed",
    payments.INVOICE_PAID: "payment",
    payments.PAYMENT_FAILED: "payment_failed",
    payments.SUBSCRIPTION_UPDATED: "updated",
    payments.SUBSCRIPTION_DELETED: "ended",
}


async def apply_event(farm: Farm, provider: str, event: payments.BillingEvent) -> Outcome:
    """Apply one verified webhook event exactly once; never raises for a bad event."""
    async with farm.sessions() as db:
        try:
            outcome, user_id = await _apply_once(db, farm, provider, event)
        except IntegrityError:  # the same event (or checkout), delivered twice at once
            await db.rollback()
            return Outcome(False, "duplicate")
    if user_id is not None:
        await refresh(farm, [user_id])
    return outcome


async def _apply_once(
    db: AsyncSession, farm: Farm, provider: str, event: payments.BillingEvent
) -> tuple[Outcome, int | None]:
    now = farm.clock()
    key = f"{provider}:{event.id}"[:255]
    if await db.get(models.ProviderEvent, key) is not None:
        return Outcome(False, "duplicate"), None
    record = models.ProviderEvent(id=key, kind=event.kind, received_at=now)
    db.add(record)
    sub = None if event.kind == payments.IGNORED else await _find(db, provider, event)
    if event.kind == payments.IGNORED:
        outcome = Outcome(False, "not acted on")
    elif sub is None:
        outcome = Outcome(False, "unknown customer")
        log.warning(
            "%s webhook %s (%s) names no known customer (%s, %s): acknowledged, ignored",
            provider,
            event.id,
            event.kind,
            event.customer_id,
            event.subscription_id,
        )
    else:
        outcome = _apply(sub, event, farm.tiers, now)
        if outcome.applied and sub.id is None:
            db.add(sub)
        if outcome.applied:
            sub.provider, sub.updated_at = provider, now
            kind = _HISTORY_KIND.get(event.kind, event.kind)
            history(db, sub.user_id, kind, now, sub.tier, event.amount, outcome.note)
    record.outcome = outcome.note[:200]
    user_id = sub.user_id if sub is not None else None
    await db.commit()
    return outcome, user_id
