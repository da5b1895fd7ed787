"""shapefarm scheduler: pure scheduling policy (no I/O, no clock, no randomness).

Time and state are passed in; every function returns new values. See
``docs/scheduling.md`` for the policy in words.
"""

from __future__ import annotations

from scheduler.admission import Refusal, check_limits, check_quota, check_submit, submit_refusal
from scheduler.estimate import QueueEstimates, estimate_queue, queue_positions
from scheduler.fairshare import CREDIT_PER_WEIGHT, MAX_CREDIT_BOOST, user_weight
from scheduler.lease import Fail, Lease, Requeue, expired, grant, on_lost, renew
from scheduler.policy import plan
from scheduler.queue import QueueIndex
from scheduler.snapshot import (
    Agent,
    Assignment,
    FairState,
    Job,
    Plan,
    QueueEstimate,
    Snapshot,
    User,
    order_key,
)
from scheduler.tiers import FREE_TIER, Price, Tier, parse_tiers

__all__ = [
    "CREDIT_PER_WEIGHT",
    "FREE_TIER",
    "MAX_CREDIT_BOOST",
    "Agent",
    "Assignment",
    "Fail",
    "FairState",
    "Job",
    "Lease",
    "Plan",
    "Price",
    "QueueEstimate",
    "QueueEstimates",
    "QueueIndex",
    "Refusal",
    "Requeue",
    "Snapshot",
    "Tier",
    "User",
    "check_limits",
    "check_quota",
    "check_submit",
    "estimate_queue",
    "expired",
    "grant",
    "on_lost",
    "order_key",
    "parse_tiers",
    "plan",
    "queue_positions",
    "renew",
    "submit_refusal",
    "user_weight",
]
