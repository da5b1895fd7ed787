"""Stride bookkeeping: credit weights, virtual-time clamping, state pruning."""

from __future__ import annotations

import pytest

from scheduler import FairState
from scheduler.fairshare import Ledger, user_weight


@pytest.mark.parametrize(
    ("credit", "weight"),
    [(0.0, 1.0), (-5.0, 1.0), (float("nan"), 1.0), (50.0, 1.5), (100.0, 2.0), (1e9, 2.0)],
)
def test_fairshare_user_weight_grows_with_credit_and_caps(credit: float, weight: float) -> None:
    assert user_weight(credit) == weight


def test_fairshare_charge_advances_pass_by_steps_over_weight() -> None:
    ledger = Ledger(FairState())
    new_user_pass = ledger.charge("pro", "u", 60, 6.0, 2.0, by_tier_pass=True, by_user_pass=True)
    assert ledger.tier_pass["pro"] == 10.0
    assert new_user_pass == 30.0


def test_fairshare_returning_tier_starts_at_virtual_time() -> None:
    ledger = Ledger(FairState(vtime=500.0, tier_pass=(("free", 20.0), ("pro", 900.0))))
    assert ledger.tier_start("free") == 500.0  # no banked credit from idling
    assert ledger.tier_start("pro") == 900.0  # but debt is kept
    assert ledger.tier_start("new") == 500.0


def test_fairshare_bumps_do_not_move_virtual_time() -> None:
    ledger = Ledger(FairState(vtime=5.0))
    ledger.charge("free", "u", 64, 1.0, 1.0, by_tier_pass=False, by_user_pass=False)
    assert ledger.vtime == 5.0
    assert ledger.tier_pass["free"] == 69.0


def test_fairshare_freeze_keeps_only_entries_ahead_of_virtual_time() -> None:
    ledger = Ledger(FairState())
    ledger.charge("free", "a", 10, 1.0, 1.0, by_tier_pass=True, by_user_pass=True)
    ledger.charge("pro", "b", 60, 6.0, 1.0, by_tier_pass=True, by_user_pass=True)
    ledger.charge("free", "c", 10, 1.0, 1.0, by_tier_pass=True, by_user_pass=True)
    state = ledger.freeze()
    assert state.vtime == 10.0
    assert state.tier_pass == (("free", 20.0),)
    assert ("free", "a", 10.0) in state.user_pass
    assert Ledger(state).freeze() == state
