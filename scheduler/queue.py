"""The waiting jobs, kept in the order the planner walks them.

A :class:`QueueIndex` is maintained one job at a time (``add``/``discard``),
so a planning pass reads each user's line as it stands instead of grouping and
sorting the whole queue again. Each user's :class:`UserLine` holds its jobs in
``order_key`` order, and the same keys once more per ``Job.needs`` (the jobs the
same agents can run): the planner uses those to step over a run of jobs no free
agent can run in ``O(log n)`` instead of one by one.

Plain data structures, no I/O: the coordinator owns one and changes it as jobs
are queued, assigned, requeued, re-prioritised or settled.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping

from scheduler.snapshot import Job, order_key

# ``order_key(job)``: the total order inside one user's line.
Key = tuple[int, float, str]
# ``Job.needs``: everything that decides which agents can run a job.
Needs = tuple[str, int, frozenset[str]]


class UserLine:
    """One user's waiting jobs: ``jobs`` and ``keys`` in ``order_key`` order."""

    __slots__ = ("groups", "jobs", "keys")

    def __init__(self) -> None:
        self.jobs: list[Job] = []
        self.keys: list[Key] = []
        # job.needs -> the keys of the user's jobs with those needs, sorted
        self.groups: dict[Needs, list[Key]] = {}

    def __len__(self) -> int:
        return len(self.jobs)

    def add(self, job: Job) -> None:
        key = order_key(job)
        at = bisect_left(self.keys, key)
        self.keys.insert(at, key)
        self.jobs.insert(at, job)
        group = self.groups.setdefault(job.needs, [])
        group.insert(bisect_left(group, key), key)

    def remove(self, job: Job) -> None:
        key = order_key(job)
        at = bisect_left(self.keys, key)
        del self.keys[at]
        del self.jobs[at]
        group = self.groups[job.needs]
        del group[bisect_left(group, key)]
        if not group:
            del self.groups[job.needs]

    def resort(self) -> None:
        """Put ``jobs`` back in order and rebuild the keys (after appending many)."""
        self.jobs.sort(key=order_key)
        self.keys = [order_key(job) for job in self.jobs]
        self.groups = {}
        for key, job in zip(self.keys, self.jobs, strict=True):
            group = self.groups.get(job.needs)
            if group is None:
                self.groups[job.needs] = [key]
            else:
                group.append(key)

    def same_needs_run(self, pos: int) -> int:
        """How many jobs from ``pos`` on share the needs of ``jobs[pos]``, in a row.

        The user's line and the group of those needs are both sorted and the
        group is part of the line, so they agree from ``pos`` on exactly as long
        as no job of other needs comes between: a binary search finds where.
        """
        keys = self.keys
        group = self.groups[self.jobs[pos].needs]
        start = bisect_left(group, keys[pos])
        span = min(len(keys) - pos, len(group) - start)
        return bisect_left(range(span), True, key=lambda t: keys[pos + t] != group[start + t])


class QueueIndex(Mapping[str, Job]):
    """Queued jobs by id, by user (each in dispatch order) and the admin-bumped ones."""

    def __init__(self, jobs: Iterable[Job] = ()) -> None:
        self._jobs: dict[str, Job] = {}
        self._lines: dict[str, UserLine] = {}
        self._bumped: dict[str, Job] = {}  # priority > 0
        for job in jobs:
            self.add(job)

    # -- Mapping ------------------------------------------------------------

    def __getitem__(self, job_id: str) -> Job:
        return self._jobs[job_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._jobs)

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    # -- changes ------------------------------------------------------------

    def add(self, job: Job) -> None:
        """Put a job in line (replacing a job with the same id)."""
        self.discard(job.id)
        self._jobs[job.id] = job
        line = self._lines.get(job.user_id)
        if line is None:
            line = self._lines[job.user_id] = UserLine()
        line.add(job)
        if job.priority > 0:
            self._bumped[job.id] = job

    def extend(self, jobs: Iterable[Job]) -> None:
        """Add many jobs at once (a start-up): each line is sorted once, not per job."""
        touched: dict[str, UserLine] = {}
        for job in {job.id: job for job in jobs}.values():  # the last of an id wins
            self.discard(job.id)
            self._jobs[job.id] = job
            line = self._lines.get(job.user_id)
            if line is None:
                line = self._lines[job.user_id] = UserLine()
            line.jobs.append(job)
            touched[job.user_id] = line
            if job.priority > 0:
                self._bumped[job.id] = job
        for line in touched.values():
            line.resort()

    def discard(self, job_id: str) -> Job | None:
        """Take a job out of line; returns it, or None if it was not queued."""
        job = self._jobs.pop(job_id, None)
        if job is None:
            return None
        line = self._lines[job.user_id]
        line.remove(job)
        if not line:
            del self._lines[job.user_id]
        self._bumped.pop(job_id, None)
        return job

    # -- reads --------------------------------------------------------------

    @property
    def lines(self) -> Mapping[str, UserLine]:
        """user id -> that user's line (only users with a waiting job)."""
        return self._lines

    def bumped(self) -> Iterable[Job]:
        """The jobs an admin bumped (``priority > 0``), in no particular order."""
        return self._bumped.values()

    def count(self, user_id: str) -> int:
        """How many jobs the user has waiting."""
        line = self._lines.get(user_id)
        return len(line) if line is not None else 0
