"""Skipping, in one step, the runs of jobs a planning pass would skip one by one.

A job nothing free can run is skipped for the call, uncharged (see
``scheduler.policy``). Skips change no pass, so the loop would come straight
back to the same tier, and often the same user, to skip the next one: with a
backlog nobody can run, every pass walked it one pick at a time. These
functions take the same decisions a run at a time, with binary searches over
the users' lines (``scheduler.queue.UserLine``). Package-internal.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING

from scheduler.snapshot import Job

if TYPE_CHECKING:
    from scheduler.policy import Dispatch, _TierQueue, _UserQueue


def skip_run(d: Dispatch, uq: _UserQueue, aged: bool) -> None:
    """After a skip, skip the next jobs that can never run in this call.

    Exactly what the main loop would do, only without a heap round per job
    (a backlog nobody can run made every pass walk it one pick at a time).
    Skipping charges nothing, so the same tier comes back and, as long as
    the same user would be picked again, it skips the new head again: picked
    by stride, no head in the tier was aged, and the user stays first while
    its new head is not aged either. Picked by age, the loop goes on taking
    the oldest head of the tier: see ``sweep_aged``.
    """
    if aged:
        sweep_aged(d, d.tiers[uq.tier.name])
        return
    aging_s, now = uq.tier.aging_s, d.now
    while True:
        head = d._head(uq)
        if head is None or not d._never_runs(head):
            return
        if now - head.enqueued_at >= aging_s:
            return
        end = run_end(d, uq, head, aged=False)
        d.skipped_runs.append((uq.line, uq.pos, end))
        uq.pos = end


def sweep_aged(d: Dispatch, tq: _TierQueue) -> None:
    """Skip, across the tier's users, the aged heads nothing can run, oldest first.

    Picked by age, the loop takes the oldest head of the tier while it is
    aged and skips it while nothing can run it (uncharged: the tier and its
    users keep their passes), so the heads go in age order across the users.
    Each user's next jobs that would go that way form a run (``run_end``);
    the first job after a run, or a head outside any run, is where the loop
    could stop. The oldest of those is the bound: every run job older than
    it is skipped, one binary search per user, and the loop carries on from
    there exactly as it would have.
    """
    runs: list[tuple[_UserQueue, int]] = []
    bound: tuple[float, str] | None = None
    for uq in list(tq.users.values()):
        head = d._head(uq)
        if head is None:
            continue
        end = uq.pos
        if d._never_runs(head) and d.now - head.enqueued_at >= uq.tier.aging_s:
            end = run_end(d, uq, head, aged=True)
            runs.append((uq, end))
        # The user's head once the run is gone (a bumped job, placed before the loop, may
        # sit right after the run in its line).
        after = d._unplaced_from(uq, end)
        if after < len(uq.jobs):
            stop = uq.jobs[after]
            if bound is None or (stop.enqueued_at, stop.id) < bound:
                bound = (stop.enqueued_at, stop.id)
    for uq, end in runs:
        jobs, pos = uq.jobs, uq.pos
        if bound is not None:
            end = pos + bisect_left(
                range(pos, end), bound, key=lambda i: (jobs[i].enqueued_at, jobs[i].id)
            )
        if end > pos:
            d.skipped_runs.append((uq.line, pos, end))
            uq.pos = end
            d._activate(uq)


def run_end(d: Dispatch, uq: _UserQueue, head: Job, *, aged: bool) -> int:
    """Where the run of jobs skipped the same way as ``head`` ends, in one search.

    The jobs that follow ``head`` in a row with its needs (so nothing free
    runs them either), its priority (then the age order of the line is the
    age order of the run) and on the same side of the aging limit: each
    would be skipped like the head. Each of those conditions, once broken
    along the line, stays broken, so a binary search finds the end.
    """
    jobs, pos, now, aging_s = uq.jobs, uq.pos, d.now, uq.tier.aging_s

    def stops(t: int) -> bool:
        job = jobs[pos + t]
        return job.priority != head.priority or (now - job.enqueued_at >= aging_s) != aged

    return pos + bisect_left(range(uq.line.same_needs_run(pos)), True, key=stops)
