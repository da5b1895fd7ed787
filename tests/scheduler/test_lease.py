"""Leases: grant, renew, expiry, and what to do with a lost attempt."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler import Fail, Lease, Requeue, expired, grant, on_lost, renew


def test_lease_grant_and_renew_extend_from_now() -> None:
    lease = grant("j", "a", 1, now=100.0, lease_seconds=30.0)
    assert lease == Lease("j", "a", 1, 130.0)
    assert renew(lease, 120.0, 30.0).expires_at == 150.0


def test_lease_renew_never_shortens() -> None:
    lease = Lease("j", "a", 1, 200.0)
    assert renew(lease, 100.0, 30.0) == lease


def test_lease_expired_lists_due_leases_oldest_first() -> None:
    leases = [Lease("b", "x", 0, 10.0), Lease("a", "x", 0, 10.0), Lease("c", "y", 0, 5.0)]
    leases.append(Lease("d", "y", 0, 10.1))
    assert [lease.job_id for lease in expired(leases, 10.0)] == ["c", "a", "b"]
    assert expired([], 1e9) == []


def test_lease_on_lost_requeues_then_fails() -> None:
    assert on_lost(0, 3) == Requeue(attempt=1)
    assert on_lost(1, 3) == Requeue(attempt=2)
    outcome = on_lost(2, 3)
    assert isinstance(outcome, Fail)
    assert "gave up after 3 attempts" in outcome.reason
    assert isinstance(on_lost(0, 1), Fail)
    assert "1 attempt:" in on_lost(0, 1).reason  # type: ignore[union-attr]


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 20), st.integers(1, 20))
def test_lease_on_lost_fails_exactly_when_attempts_are_spent(attempt: int, limit: int) -> None:
    outcome = on_lost(attempt, limit)
    assert isinstance(outcome, Fail) == (attempt + 1 >= limit)
