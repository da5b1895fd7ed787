"""Queue estimates: each waiting job's place in line and a rough ETA."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Mapping

from scheduler.policy import Dispatch
from scheduler.queue import UserLine
from scheduler.snapshot import FairState, Job, QueueEstimate, Snapshot, order_key


class QueueEstimates(Mapping[str, QueueEstimate]):
    """Job id -> its estimate, as :func:`estimate_queue` found them.

    The jobs the walk placed are listed one by one; the jobs it skipped (no
    connected agent can run them) come after them in ``order_key`` order and
    are kept as the runs the walk stepped over: a job's place among them is
    counted with a binary search per run when it is asked for, so a backlog
    nobody can run costs nothing until someone looks it up.
    """

    def __init__(
        self,
        placed: dict[str, QueueEstimate],
        runs: list[tuple[UserLine, int, int]],
        jobs: Mapping[str, Job] | None = None,
    ) -> None:
        """``jobs``: the queue walked, to look a skipped job up by id (None: the runs)."""
        self._placed = placed
        self._runs = runs
        self._jobs = jobs
        self._skipped = sum(end - start for _, start, end in runs)

    def __len__(self) -> int:
        return len(self._placed) + self._skipped

    def __iter__(self) -> Iterator[str]:
        yield from self._placed
        yield from (job.id for job in self.skipped_in_order())

    def __getitem__(self, job_id: str) -> QueueEstimate:
        found = self._placed.get(job_id)
        if found is not None:
            return found
        if self._jobs is None:
            self._jobs = {j.id: j for line, start, end in self._runs for j in line.jobs[start:end]}
        job = self._jobs.get(job_id)
        estimate = self.estimate(job) if job is not None else None
        if estimate is None:
            raise KeyError(job_id)
        return estimate

    def estimate(self, job: Job) -> QueueEstimate | None:
        """``self.get(job.id)`` without scanning runs: the job tells where it would be."""
        found = self._placed.get(job.id)
        if found is not None:
            return found
        key = order_key(job)
        for line, start, end in self._runs:
            at = bisect_left(line.keys, key, start, end)
            if at < end and line.jobs[at].id == job.id:
                return self._rest(key)
        return None

    def _rest(self, key: tuple[int, float, str]) -> QueueEstimate:
        ahead = sum(
            bisect_left(line.keys, key, start, end) - start for line, start, end in self._runs
        )
        return QueueEstimate(len(self._placed) + ahead + 1, None)

    @property
    def placed(self) -> Mapping[str, QueueEstimate]:
        """The estimates of the jobs some connected agent can run, in order."""
        return self._placed

    def skipped_in_order(self) -> list[Job]:
        """The jobs no connected agent can run, in the order they are listed."""
        jobs = {j.id: j for line, start, end in self._runs for j in line.jobs[start:end]}
        return sorted(jobs.values(), key=order_key)


def estimate_queue(
    snapshot: Snapshot, now: float, state: FairState | None, avg_job_seconds: float
) -> QueueEstimates:
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
    jobs = snapshot.jobs
    return QueueEstimates(
        result, dispatch.skipped_runs, jobs if isinstance(jobs, Mapping) else None
    )


def queue_positions(
    snapshot: Snapshot, now: float, state: FairState | None, avg_job_seconds: float
) -> dict[str, QueueEstimate]:
    """:func:`estimate_queue` as a plain dict (every job's estimate worked out)."""
    found = estimate_queue(snapshot, now, state, avg_job_seconds)
    result = dict(found.placed)
    for position, job in enumerate(found.skipped_in_order(), start=len(result) + 1):
        result[job.id] = QueueEstimate(position, None)
    return result
