"""Queue estimates: each waiting job's place in line and a rough ETA."""

from __future__ import annotations

from scheduler.policy import Dispatch
from scheduler.snapshot import FairState, QueueEstimate, Snapshot, order_key


def queue_positions(
    snapshot: Snapshot, now: float, state: FairState | None, avg_job_seconds: float
) -> dict[str, QueueEstimate]:
    """Each queued job's place in the dispatch order and a rough wait estimate.

    The order is what :func:`plan` would do with unlimited free slots. The ETA
    assumes every capable agent slot finishes one job per ``avg_job_seconds``
    and that a user's jobs go ``max_concurrent`` at a time. Jobs no connected
    agent can run come last with ``eta_s=None``.
    """
    dispatch = Dispatch(snapshot, now, state, unlimited=True)
    dispatch.run()
    capacity = {a.id: max(a.total_slots, a.free_slots, 1) for a in dispatch.agents}
    per_user: dict[str, int] = {}
    result: dict[str, QueueEstimate] = {}
    capable: dict[tuple[str, int, frozenset[str]], int] = {}  # job.needs -> capable slots
    for position, job in enumerate(dispatch.order, start=1):
        slots = capable.get(job.needs, 0)
        if not slots:
            slots = capable[job.needs] = sum(
                capacity[a.id] for a in dispatch.agents if a.can_run(job)
            )
        uq = dispatch.users[job.user_id]
        user = snapshot.users[job.user_id]
        ahead = per_user.get(job.user_id, 0)
        per_user[job.user_id] = ahead + 1
        own_rounds = (ahead + max(user.running, 0)) // uq.tier.max_concurrent
        rounds = max((position - 1) // slots, own_rounds)
        result[job.id] = QueueEstimate(position, rounds * avg_job_seconds)
    rest = sorted({j.id: j for j in dispatch.skipped}.values(), key=order_key)
    for position, job in enumerate(rest, start=len(result) + 1):
        result[job.id] = QueueEstimate(position, None)
    return result
