"""Leases: every assignment is held by an agent only while it keeps proving life."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class Lease:
    job_id: str
    agent_id: str
    attempt: int
    expires_at: float


@dataclass(frozen=True, slots=True)
class Requeue:
    """Put the job back in the queue with its original ``enqueued_at`` (its place).

    ``attempt`` is the number the next assignment carries.
    """

    attempt: int = 0


@dataclass(frozen=True, slots=True)
class Fail:
    reason: str


def grant(job_id: str, agent_id: str, attempt: int, now: float, lease_seconds: float) -> Lease:
    """A fresh lease for a new assignment."""
    return Lease(job_id, agent_id, attempt, now + lease_seconds)


def renew(lease: Lease, now: float, lease_seconds: float) -> Lease:
    """Extend on heartbeat/progress; never shortens a lease (out-of-order heartbeats)."""
    return replace(lease, expires_at=max(lease.expires_at, now + lease_seconds))


def expired(leases: Iterable[Lease], now: float) -> list[Lease]:
    """Leases whose time is up at ``now``, oldest expiry first (ties by job id)."""
    return sorted(
        (lease for lease in leases if lease.expires_at <= now),
        key=lambda lease: (lease.expires_at, lease.job_id, lease.attempt),
    )


def on_lost(attempt: int, max_attempts: int) -> Requeue | Fail:
    """What to do when attempt ``attempt`` (0-based) was lost: retry or give up."""
    tries = attempt + 1
    if tries >= max_attempts:
        return Fail(
            f"gave up after {tries} attempt{'s' if tries != 1 else ''}: "
            "the agent running it disconnected or stopped reporting each time"
        )
    return Requeue(attempt=tries)
