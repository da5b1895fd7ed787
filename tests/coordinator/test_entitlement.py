"""The effective tier: admin, complimentary grant and subscription record, highest wins."""

from __future__ import annotations

import pytest

from coordinator.app import load_tiers
from coordinator.services.entitlement import entitlement, subscription_until
from coordinator.store import models

TIERS = load_tiers(None)
GRACE = 100.0


def user(*, admin: bool = False, tier: str = "free", expires: float | None = None) -> models.User:
    return models.User(
        id=1, username="u", is_admin=admin, tier=tier, tier_expires_at=expires, credit=0.0
    )


def sub(
    tier: str = "plus",
    status: str = "active",
    end: float | None = 1000.0,
    provider: str = "stripe",
    cancel: bool = False,
    pending: str | None = None,
) -> models.Subscription:
    return models.Subscription(
        user_id=1,
        tier=tier,
        status=status,
        current_period_end=end,
        provider=provider,
        cancel_at_period_end=cancel,
        pending_tier=pending,
    )


def with_sub(u: models.User, s: models.Subscription | None) -> models.User:
    u.subscription = s
    return u


@pytest.mark.parametrize(
    ("u", "now", "expected"),
    [
        (user(), 0.0, ("free", "free")),
        (user(admin=True), 0.0, ("admin", "admin")),
        (user(tier="pro", expires=50.0), 49.0, ("pro", "complimentary")),
        (user(tier="pro", expires=50.0), 50.0, ("free", "free")),
        (user(tier="pro"), 1e12, ("pro", "complimentary")),
        (user(tier="gone"), 0.0, ("free", "free")),
        (with_sub(user(), sub()), 999.0, ("plus", "subscription")),
        # a renewing subscription keeps its tier through the grace period
        (with_sub(user(), sub()), 1000.0 + GRACE - 1, ("plus", "subscription")),
        (with_sub(user(), sub()), 1000.0 + GRACE, ("free", "free")),
        (with_sub(user(), sub(status="past_due")), 1050.0, ("plus", "subscription")),
        # ending at the period end, or a voucher: no grace
        (with_sub(user(), sub(cancel=True)), 1000.0, ("free", "free")),
        (with_sub(user(), sub(provider="voucher")), 1000.0, ("free", "free")),
        (with_sub(user(), sub(status="cancelled")), 10.0, ("free", "free")),
        (with_sub(user(), sub(status="expired")), 10.0, ("free", "free")),
        # a downgrade waits for the period end
        (with_sub(user(), sub("pro", pending="plus")), 999.0, ("pro", "subscription")),
        (with_sub(user(), sub("pro", pending="plus")), 1001.0, ("plus", "subscription")),
        # the highest-ranked source wins
        (with_sub(user(tier="pro", expires=5000.0), sub()), 10.0, ("pro", "complimentary")),
        (with_sub(user(tier="plus"), sub("pro")), 10.0, ("pro", "subscription")),
        (with_sub(user(admin=True), sub("pro")), 10.0, ("admin", "admin")),
    ],
)
def test_entitlement_highest_tier_that_holds(
    u: models.User, now: float, expected: tuple[str, str]
) -> None:
    found = entitlement(u, TIERS, now, GRACE)
    assert (found.tier, found.source) == expected


def test_entitlement_until_names_the_end() -> None:
    assert subscription_until(sub(), GRACE) == 1000.0 + GRACE
    assert subscription_until(sub(cancel=True), GRACE) == 1000.0
    assert subscription_until(sub(end=None), GRACE) is None
    assert entitlement(user(tier="pro", expires=50.0), TIERS, 0.0, GRACE).until == 50.0
