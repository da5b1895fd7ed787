"""The effective tier: the one function that says which tier a user's jobs run under.

Three things can give a user a tier, and the highest-ranked one that holds wins:

- being an administrator (the ``admin`` tier, when the tiers file has one);
- a complimentary tier an admin set on the account (``users.tier``, with an
  optional expiry, ``users.tier_expires_at``);
- the subscription record (``subscriptions``, see services.subscriptions):
  an active or past-due subscription gives its tier until the end of the paid
  period, plus the grace period (setting ``subscription_grace_s``) when it is
  renewed by a provider and the renewal has not been paid yet; one set to end
  at the period end, a voucher or an admin grant ends exactly at the period end.
  A downgrade waiting for the next period (``pending_tier``) applies from the
  period end on.

Everything else is ``free``. The farm (scheduler snapshots), the profile, the
plans page, the stats and the admin console all ask this module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import scheduler
from coordinator.store import models

ADMIN_TIER = "admin"
# Subscription statuses
ACTIVE, PAST_DUE, CANCELLED, EXPIRED = "active", "past_due", "cancelled", "expired"
STATUSES = (ACTIVE, PAST_DUE, CANCELLED, EXPIRED)
# Providers whose subscriptions renew on their own (a late payment gets the grace period).
NOT_RENEWING = frozenset({"voucher", "admin", ""})


@dataclass(frozen=True, slots=True)
class Entitlement:
    """``source``: "admin", "complimentary", "subscription" or "free"; ``until``: when
    it ends on its own (None: it does not)."""

    tier: str
    source: str
    until: float | None = None


def subscription_until(sub: models.Subscription, grace_s: float) -> float | None:
    """Until when ``sub`` gives its tier (None: without end), whatever the clock says."""
    if sub.current_period_end is None:
        return None
    renews = sub.provider not in NOT_RENEWING and not sub.cancel_at_period_end
    return sub.current_period_end + (grace_s if renews else 0.0)


def subscription_tier(sub: models.Subscription | None, now: float, grace_s: float) -> str | None:
    """The tier the subscription record gives at ``now``, or None."""
    if sub is None or sub.status not in (ACTIVE, PAST_DUE):
        return None
    until = subscription_until(sub, grace_s)
    if until is not None and now >= until:
        return None
    if sub.pending_tier and sub.current_period_end is not None and now >= sub.current_period_end:
        return sub.pending_tier
    return sub.tier


def entitlement(
    user: models.User, tiers: Mapping[str, scheduler.Tier], now: float, grace_s: float
) -> Entitlement:
    """What ``user`` runs under at ``now``: the highest-ranked tier that holds."""
    found: list[Entitlement] = []
    if user.is_admin and ADMIN_TIER in tiers:
        found.append(Entitlement(ADMIN_TIER, "admin"))
    expires = user.tier_expires_at
    if user.tier != scheduler.FREE_TIER and (expires is None or now < expires):
        found.append(Entitlement(user.tier, "complimentary", expires))
    sub = user.subscription
    tier = subscription_tier(sub, now, grace_s)
    if sub is not None and tier is not None:
        found.append(Entitlement(tier, "subscription", subscription_until(sub, grace_s)))
    known = [e for e in found if e.tier in tiers]
    if not known:
        return Entitlement(scheduler.FREE_TIER, "free")
    return max(known, key=lambda e: tiers[e.tier].rank)


def effective_tier(
    user: models.User, tiers: Mapping[str, scheduler.Tier], now: float, grace_s: float
) -> str:
    return entitlement(user, tiers, now, grace_s).tier


def policy(
    tiers: Mapping[str, scheduler.Tier], grace_s: float
) -> Callable[[models.User, float], str]:
    """``effective_tier`` bound to the tiers and grace period, for the farm (which sits
    below the services and is handed this at assembly, see coordinator.app)."""

    def tier_of(user: models.User, now: float) -> str:
        return effective_tier(user, tiers, now, grace_s)

    return tier_of
