"""A discrete-event simulation of the coordinator loop around :func:`plan`.

Pure and deterministic like the rest of the package: the clock is simulated
and job durations come from a caller-supplied function. Tests use it for the
liveness, fairness and aging properties; ``bench/fairness.py`` for figures.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from heapq import heappop, heappush

from scheduler.policy import plan
from scheduler.snapshot import Agent, FairState, Job, Snapshot, User
from scheduler.tiers import FREE_TIER, Tier


@dataclass(frozen=True, slots=True)
class Run:
    """One job's life in the simulation (``job.enqueued_at`` is when it queued)."""

    job: Job
    tier: str
    agent_id: str
    start: float
    end: float
    batch_size: int

    @property
    def wait(self) -> float:
        return self.start - self.job.enqueued_at


@dataclass(frozen=True, slots=True)
class Outcome:
    runs: tuple[Run, ...]
    plan_calls: int
    unassigned: tuple[Job, ...]  # still queued when the simulation stopped
    end: float


def simulate(
    jobs: Sequence[Job],
    users: Mapping[str, User],
    agents: Sequence[Agent],
    tiers: Mapping[str, Tier],
    duration: Callable[[Job], float],
    *,
    limit_queued: bool = False,
    until: float = math.inf,
) -> Outcome:
    """Run ``jobs`` through ``plan`` on ``agents`` (``free_slots`` = their slots).

    Jobs arrive at their ``enqueued_at``. With ``limit_queued`` a user's job
    only enters the queue while the user has fewer than ``tier.max_queued``
    waiting (as ``check_submit`` would enforce for a patient client); its
    ``enqueued_at`` becomes that moment. A batch takes its longest job's time.
    """
    arrivals: dict[str, deque[Job]] = {}
    for job in sorted(jobs, key=lambda j: (j.enqueued_at, j.id)):
        arrivals.setdefault(job.user_id, deque()).append(job)
    queue: dict[str, Job] = {}
    queued_by_user: dict[str, int] = dict.fromkeys(arrivals, 0)
    running = {uid: u.running for uid, u in users.items()}
    free = {a.id: a.free_slots for a in agents}
    busy: list[tuple[float, int, str, tuple[Job, ...]]] = []
    runs: list[Run] = []
    state = FairState()
    tier_of = {uid: (u.tier if u.tier in tiers else FREE_TIER) for uid, u in users.items()}
    now, seq, calls = -math.inf, 0, 0

    def cap(uid: str) -> float:
        return tiers[tier_of[uid]].max_queued if limit_queued else math.inf

    def admit(now: float) -> None:
        for uid, pending in arrivals.items():
            while pending and pending[0].enqueued_at <= now and queued_by_user[uid] < cap(uid):
                job = pending.popleft()
                if limit_queued:
                    job = replace(job, enqueued_at=max(job.enqueued_at, now))
                queue[job.id] = job
                queued_by_user[uid] += 1

    while True:
        next_arrival = min(
            (
                p[0].enqueued_at
                for uid, p in arrivals.items()
                if p and queued_by_user[uid] < cap(uid)
            ),
            default=math.inf,
        )
        next_event = min(next_arrival, busy[0][0] if busy else math.inf)
        if next_event == math.inf or next_event > until:
            break
        now = max(now, next_event)
        while busy and busy[0][0] <= now:
            _, _, agent_id, batch = heappop(busy)
            free[agent_id] += 1
            for job in batch:
                running[job.user_id] -= 1
        admit(now)
        snapshot = Snapshot(
            jobs=list(queue.values()),
            users={uid: replace(u, running=running[uid]) for uid, u in users.items()},
            agents=[replace(a, free_slots=free[a.id]) for a in agents],
            tiers=tiers,
        )
        result = plan(snapshot, now, state)
        calls += 1
        state = result.state
        for assignment in result.assignments:
            batch = tuple(queue.pop(jid) for jid in assignment.job_ids)
            end = now + max(duration(job) for job in batch)
            free[assignment.agent_id] -= 1
            seq += 1
            heappush(busy, (end, seq, assignment.agent_id, batch))
            for job in batch:
                running[job.user_id] += 1
                queued_by_user[job.user_id] -= 1
                runs.append(
                    Run(job, tier_of[job.user_id], assignment.agent_id, now, end, len(batch))
                )
    return Outcome(tuple(runs), calls, tuple(queue.values()), now)
