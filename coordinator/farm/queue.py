"""The farm's users and waiting jobs: the queue index, admission's counts, estimates."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

import scheduler
from coordinator.farm.live import DailyUsage, LiveProgress, batch_key
from coordinator.farm.state import FarmState
from coordinator.store import models

# Queue estimates are reused until the queue, its users or the agents change, and
# at most this long (waiting jobs age, which can reorder the line).
POSITIONS_MAX_AGE_S = 1.0


class FarmQueue(FarmState):
    """Users (their scheduler snapshots, usage) and the jobs waiting in line."""

    async def remember_user(self, db: AsyncSession, user_id: int) -> scheduler.User:
        user = await db.get(models.User, user_id)
        if user is None:
            raise LookupError(f"user {user_id} does not exist")
        return self.refresh_user(user)

    def refresh_user(self, user: models.User) -> scheduler.User:
        key = str(user.id)
        tier = self.tier_of(user, self.clock())
        if tier not in self.tiers:
            tier = scheduler.FREE_TIER
        old = self._users.get(key)
        snap = scheduler.User(key, tier, old.running if old else 0, user.credit)
        if snap != old:
            self._users[key] = snap
            self.version_bump()
        return snap

    def submitting(self, user_id: int) -> asyncio.Lock:
        """The lock one user's submissions take in turn: the queue count and quota that
        admission checks stay true until the admitted jobs are inserted and queued."""
        lock = self._submitting.get(user_id)
        if lock is None:
            lock = self._submitting[user_id] = asyncio.Lock()
        return lock

    def forget_user(self, user_id: int) -> None:
        """Drop what the farm keeps about a deleted user (its snapshot, its daily usage)."""
        if self._users.pop(str(user_id), None) is not None:
            self.version_bump()
        self._usage.pop(user_id, None)

    def _add_running(self, user_id: int, delta: int) -> None:
        key = str(user_id)
        old = self._users.get(key) or scheduler.User(key, "free")
        self._users[key] = scheduler.User(key, old.tier, max(0, old.running + delta), old.credit)
        self.version_bump()

    def _job_of(self, job: Any) -> scheduler.Job:  # a models.Job, or a row of its columns
        return scheduler.Job(
            id=job.id,
            user_id=str(job.user_id),
            enqueued_at=job.enqueued_at,
            batch_key=batch_key(job.model, job.steps, job.guidance, job.image_sha256),
            steps=job.steps,
            model=job.model,
            attempt=job.attempt,
            priority=job.priority,
            excluded_agents=frozenset(self._declined.get(job.id, ())),
        )

    def _enqueue(self, job: Any) -> None:  # a models.Job, or a row of its columns
        self._queue.add(self._job_of(job))
        self._owners[job.id] = job.user_id
        self._progress.pop(job.id, None)
        self.version_bump()
        if self.cluster is not None:
            self.cluster.queued(job.id)

    def enqueue_quietly(self, job: models.Job) -> None:
        """Replica mode: a job another replica queued (or requeued) goes in line here."""
        self._queue.discard(job.id)
        self._queue.add(self._job_of(job))
        self._owners[job.id] = job.user_id
        self._progress.pop(job.id, None)
        self.version_bump()
        self.hub.publish("farm")
        self._wake.set()

    def claimed_elsewhere(self, job_id: str) -> None:
        """Replica mode: the leader claimed the job (its holder sends it)."""
        self._queue.discard(job_id)
        if job_id not in self._leases:
            self._owners.pop(job_id, None)
        self.version_bump()

    def take_from_queue(self, job_ids: list[str]) -> list[scheduler.Job]:
        return [job for i in job_ids if (job := self._queue.discard(i))]

    def return_to_queue(self, jobs: list[scheduler.Job]) -> None:
        """A claim failed (nothing was claimed): the jobs go back in line."""
        for job in jobs:
            if job.id in self._owners and job.id not in self._queue:
                self._queue.add(job)

    def resume_fair_shares(self, state: scheduler.FairState) -> None:
        """Replica mode, a new leader: go on from the fair-share state the last claim stored."""
        self._fair = state

    @property
    def fair_state(self) -> scheduler.FairState:
        return self._fair

    def set_running(self, counts: dict[str, int]) -> None:
        """Replica mode, the leader: live jobs per user over every replica's agents."""
        for key, user in list(self._users.items()):
            running = counts.get(key, 0)
            if user.running != running:
                self._users[key] = scheduler.User(key, user.tier, running, user.credit)

    def _enqueue_all(self, rows: list[Any]) -> None:
        """Start-up: a whole queue in line at once (each user's line sorted once)."""
        self._queue.extend(self._job_of(row) for row in rows)
        for row in rows:
            self._owners[row.id] = row.user_id
        self.version_bump()

    def enqueue(self, job: models.Job) -> None:
        """Put a committed, queued job in line and wake the dispatcher (replica mode:
        also the other replicas' lines, through the bus)."""
        self._enqueue(job)
        self.publish(job.id)
        self._wake.set()

    def snapshot(self) -> scheduler.Snapshot:
        """What a dispatch pass plans over; the queue is the live index, not a copy."""
        if self.cluster is not None:  # every replica's agents (estimates; the leader plans
            agents = self.cluster.snapshot_agents()  # with the database's view)
        else:
            agents = [
                conn.snapshot(free=self._available(conn))
                for conn in self._agents.values()
                if conn.owner_id not in self._suspended
            ]
        return scheduler.Snapshot(jobs=self._queue, users=self._users, agents=agents,
                                  tiers=self.tiers)  # fmt: skip

    def positions(self) -> scheduler.QueueEstimates:
        """Every queued job's estimate; one computation per queue change, not per page.

        The walk covers the jobs some agent can run; a backlog no connected agent
        can run is stepped over in runs and looked up only when asked for."""
        now = self.clock()
        cached = self._positions
        if (
            cached is not None
            and cached[0] == self._version
            and 0 <= now - cached[1] < (POSITIONS_MAX_AGE_S)
        ):
            return cached[2]
        found = scheduler.estimate_queue(self.snapshot(), now, self._fair, self.avg_job_s)
        self._positions = (self._version, now, found)
        return found

    def queued_count(self, user_id: int) -> int:
        """How many jobs the user has waiting (admission's queue limit)."""
        return self._queue.count(str(user_id))

    def _tier_names(self) -> list[str]:
        return [tier.name for tier in sorted(self.tiers.values(), key=lambda tier: tier.rank)]

    def _tier_of_line(self, user_id: str) -> str:
        user = self._users.get(user_id)
        return user.tier if user else scheduler.FREE_TIER

    def queued_by_tier(self) -> dict[str, list[scheduler.Job]]:
        """The waiting jobs per effective tier: every tier listed, in rank order."""
        grouped: dict[str, list[scheduler.Job]] = {name: [] for name in self._tier_names()}
        for user_id, line in self._queue.lines.items():
            grouped.setdefault(self._tier_of_line(user_id), []).extend(line.jobs)
        return grouped

    def queued_count_by_tier(self) -> dict[str, int]:
        """How many jobs wait per effective tier (every tier listed, in rank order); its
        cost follows the number of users waiting, not of jobs."""
        counts = dict.fromkeys(self._tier_names(), 0)
        for user_id, line in self._queue.lines.items():
            tier = self._tier_of_line(user_id)
            counts[tier] = counts.get(tier, 0) + len(line)
        return counts

    def usage_of(self, user_id: int) -> DailyUsage | None:
        return self._usage.get(user_id)

    def remember_usage(self, user_id: int, usage: DailyUsage) -> DailyUsage:
        """Keep a user's usage read from the database, unless a racing reader did first
        (replica mode keeps none: other replicas count submissions too)."""
        if self.cluster is not None:
            return usage
        return self._usage.setdefault(user_id, usage)

    def note_progress(
        self, job_id: str, stage: str, step: int = 0, total: int = 0, eta_s: float | None = None
    ) -> bool:
        """An agent's word about a held job; True if it is the attempt's first word (which
        moves the job to running in the database; later progress lives in memory)."""
        live = self._progress.get(job_id)
        if live is None:
            live = self._progress[job_id] = LiveProgress()
        if live.assigned_at is None:  # the assign predates a coordinator restart
            live.assigned_at = self.clock()
        first = live.stage in ("queued", "assigned")
        live.stage, live.step, live.total, live.eta_s = stage, step, total, eta_s
        return first

    def note_uploading(self, job_id: str) -> None:
        """Generation ended and the result is on its way (upload time is not GPU time)."""
        live = self._progress.get(job_id)
        if live is not None:
            live.stage = "uploading"
            live.reported_at = self.clock()

    def decline(self, job_id: str, agent_id: str, *, blocked: bool, max_free: int) -> bool:
        """An agent gave a held job back. A prompt its owner blocks is never offered to
        that agent again. True if this decline spends none of the job's tries: at most
        ``max_free`` per job, so a misbehaving agent cannot bounce a job forever."""
        if blocked:
            self._declined.setdefault(job_id, set()).add(agent_id)
        refunds = self._decline_refunds.get(job_id, 0)
        if refunds >= max_free:
            return False
        self._decline_refunds[job_id] = refunds + 1
        return True

    def known_declines(self, job_id: str, agents: frozenset[str]) -> None:
        """Declines of a job read from the database (kept across restarts and replicas);
        call before the job is put in line."""
        if agents:
            self._declined.setdefault(job_id, set()).update(agents)

    def declined_by(self, job_id: str) -> frozenset[str]:
        """The agents that will not be offered this job again."""
        return frozenset(self._declined.get(job_id, ()))

    def _forget_declines(self, job_id: str) -> None:
        self._declined.pop(job_id, None)
        self._decline_refunds.pop(job_id, None)

    def set_priority(self, job_id: str, priority: int) -> bool:
        """Change a queued job's priority in line; False if it is not queued here."""
        queued = self._queue.get(job_id)
        if queued is None:
            return False
        self._queue.add(dataclasses.replace(queued, priority=priority))
        if self.cluster is not None:
            self.cluster.queued(job_id)
        self.nudge()
        return True
