"""Stride-scheduling bookkeeping: passes and virtual times for tiers and users.

The unit of service is one job-step: dispatching a job of ``steps`` steps
advances its tier's pass by ``steps / tier.weight`` and its user's pass (inside
the tier) by ``steps / user_weight(credit)``. The backlogged tier (user) with the
smallest pass goes next. A tier or user that comes back after an idle spell
starts at the current virtual time, so idling never banks credit.
"""

from __future__ import annotations

from scheduler.snapshot import FairState

# Volunteer credit: every CREDIT_PER_WEIGHT credit adds 1 to a user's weight
# inside their tier, up to MAX_CREDIT_BOOST (so at most 1 + MAX_CREDIT_BOOST).
CREDIT_PER_WEIGHT = 100.0
MAX_CREDIT_BOOST = 1.0


def user_weight(credit: float) -> float:
    """A user's weight inside their tier: 1, plus volunteer credit, capped at 2."""
    if not credit > 0:  # also rejects NaN
        return 1.0
    return 1.0 + min(credit / CREDIT_PER_WEIGHT, MAX_CREDIT_BOOST)


class Ledger:
    """A mutable working copy of :class:`FairState` for one planning pass."""

    def __init__(self, state: FairState) -> None:
        self.vtime = state.vtime
        self.tier_pass = dict(state.tier_pass)
        self.user_vtime = dict(state.user_vtime)
        self.user_pass = {(tier, user): p for tier, user, p in state.user_pass}

    def tier_start(self, tier: str) -> float:
        return max(self.tier_pass.get(tier, self.vtime), self.vtime)

    def user_start(self, tier: str, user: str) -> float:
        floor = self.user_vtime.get(tier, 0.0)
        return max(self.user_pass.get((tier, user), floor), floor)

    def charge(
        self,
        tier: str,
        user: str,
        steps: int,
        tier_weight: float,
        u_weight: float,
        *,
        by_tier_pass: bool,
        by_user_pass: bool,
    ) -> float:
        """Account one dispatched job; returns the user's new pass.

        A virtual time advances only when its level picked by minimum pass:
        bumps, batch riders and aged jobs pay without moving the clock.
        """
        tier_before = self.tier_start(tier)
        user_before = self.user_start(tier, user)
        if by_tier_pass:
            self.vtime = max(self.vtime, tier_before)
        if by_user_pass:
            self.user_vtime[tier] = max(self.user_vtime.get(tier, 0.0), user_before)
        cost = float(max(steps, 1))
        tier_after = tier_before + cost / tier_weight
        user_after = user_before + cost / u_weight
        self.tier_pass[tier] = tier_after
        self.user_pass[(tier, user)] = user_after
        return user_after

    def freeze(self) -> FairState:
        """Back to immutable data, dropping entries that would be clamped anyway."""
        tier_pass = tuple(sorted((t, p) for t, p in self.tier_pass.items() if p > self.vtime))
        user_pass = tuple(
            sorted(
                (t, u, p) for (t, u), p in self.user_pass.items() if p > self.user_vtime.get(t, 0.0)
            )
        )
        live = {t for t, _, _ in user_pass}
        user_vtime = tuple(sorted((t, v) for t, v in self.user_vtime.items() if t in live))
        return FairState(self.vtime, tier_pass, user_vtime, user_pass)
