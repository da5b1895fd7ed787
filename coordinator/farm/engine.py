"""The farm: the live queue, connected agents, dispatch and leases.

The database is the source of truth for jobs; the farm keeps an in-memory
index of what the scheduler needs (queued jobs, leases, connected agents) so a
dispatch pass costs no query. Every state change goes to the database first,
then to memory, then out to agents and browsers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections import Counter
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

import scheduler
from coordinator.farm import farm_units
from coordinator.farm.events import EventHub
from coordinator.farm.live import AgentConn, DailyUsage, LiveProgress, batch_key
from coordinator.settings import Settings
from coordinator.store import models
from coordinator.store.db import Reader, Writer
from coordinator.store.keycache import KeyCache
from coordinator.store.modelfiles import ModelFiles, glb_limits
from coordinator.store.storage import BlobStore
from protocol import Assign, Cancel
from scheduler.lifecycle import JobState

log = logging.getLogger(__name__)

# Upper bounds (seconds) of the dispatch latency histogram served on /metrics.
DISPATCH_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Queue estimates are reused until the queue, its users or the agents change, and
# at most this long (waiting jobs age, which can reorder the line).
POSITIONS_MAX_AGE_S = 1.0


class Farm:
    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        hub: EventHub,
        tiers: dict[str, scheduler.Tier],
        store: BlobStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        # Downloads: conversions cached, one per (job, format), a few at a time.
        self.models = ModelFiles(store, glb_limits(settings), settings.max_conversions)
        self.sessions = sessions
        # Hot-path writes (dispatch, running, results, lost leases) go through here.
        self.writer = Writer(sessions.kw["bind"])
        # Point reads of the hot API routes, and the API keys they need (see api_reads).
        self.reader = Reader(sessions.kw["bind"])
        self.keys = KeyCache()
        # make_sessionmaker gives each app a Session class of its own to listen to.
        self.keys.watch(sessions.kw.get("sync_session_class", Session))
        self.hub = hub
        self.tiers = tiers
        self.clock = clock
        self.queue: dict[str, scheduler.Job] = {}
        self.owners: dict[str, int] = {}  # job id -> user id, for queued and leased jobs
        self.users: dict[str, scheduler.User] = {}
        self.leases: dict[str, scheduler.Lease] = {}
        self.agents: dict[str, AgentConn] = {}
        self.progress: dict[str, LiveProgress] = {}
        self.fair = scheduler.FairState()
        self.wake = asyncio.Event()
        self.avg_job_s = 30.0
        self.dispatch_latency: list[float] = []
        # Cumulative histogram of dispatch passes that sent work, for /metrics.
        self.dispatch_buckets = [0] * len(DISPATCH_BUCKETS_S)
        self.dispatch_count = 0
        self.dispatch_sum_s = 0.0
        # Agents an admin drained: they stay drained across reconnects until resumed.
        self.drained: set[str] = set()
        # Users whose account is suspended: their agents get no work and are refused.
        self.suspended_owners: set[int] = set()
        # user id -> submissions in the last day (see jobs.submit)
        self.usage: dict[int, DailyUsage] = {}
        # user id -> lock held by a submission from its admission check until its jobs
        # are queued (see submitting); gone once nobody holds or awaits it.
        self._submitting: weakref.WeakValueDictionary[int, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._dispatching = asyncio.Lock()
        # Waiters for the end of the next dispatch pass (see ``dispatched``).
        self._next_pass: asyncio.Future[None] | None = None
        # Bumped whenever anything queue estimates depend on may have changed.
        self.version = 0
        self._positions: tuple[int, float, dict[str, scheduler.QueueEstimate]] | None = None
        # Called with (job id, owner) on every change of a live job (webhooks watch here).
        self.watchers: list[Callable[[str, int | None], None]] = []

    # -- life cycle ---------------------------------------------------------

    async def start(self) -> None:
        now = self.clock()
        async with self.sessions() as db:
            self.drained = set(
                await db.scalars(select(models.Agent.id).where(models.Agent.draining))
            )
            self.suspended_owners = set(
                await db.scalars(select(models.User.id).where(models.User.banned))
            )
            live = [JobState.QUEUED, JobState.ASSIGNED, JobState.RUNNING]
            # Set-based: the owners of live jobs in one query, not one SELECT per job.
            owners = await db.scalars(
                select(models.User).where(
                    models.User.id.in_(
                        select(models.Job.user_id).where(models.Job.state.in_(live)).distinct()
                    )
                )
            )
            for user in owners:
                self.refresh_user(user)
            # Plain rows, not ORM objects: 50k queued jobs load in a fraction of the time.
            job_ = models.Job
            rows = await db.execute(
                select(
                    job_.id, job_.user_id, job_.state, job_.enqueued_at, job_.model, job_.steps,
                    job_.guidance, job_.attempt, job_.priority, job_.agent_id,
                ).where(job_.state.in_(live))
            )  # fmt: skip
            for job in rows:
                if job.state == JobState.QUEUED:
                    self._enqueue(job)
                else:
                    # The agent may come back with its result; give it the grace
                    # period, then the lease reaper puts the job back in line.
                    self.owners[job.id] = job.user_id
                    self._add_running(job.user_id, +1)
                    self.leases[job.id] = scheduler.Lease(
                        job.id,
                        job.agent_id or "",
                        job.attempt,
                        now + self.settings.reconnect_grace_s,
                    )
        self._tasks = [
            asyncio.create_task(self._dispatch_loop(), name="dispatch"),
            asyncio.create_task(self._lease_loop(), name="leases"),
        ]
        self.wake.set()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for conn in list(self.agents.values()):
            with contextlib.suppress(Exception):
                await conn.close(1001, "coordinator shutting down")
        await self.writer.close()
        await self.reader.close()

    # -- users and the in-memory queue ---------------------------------------

    async def remember_user(self, db: AsyncSession, user_id: int) -> scheduler.User:
        user = await db.get(models.User, user_id)
        if user is None:
            raise LookupError(f"user {user_id} does not exist")
        return self.refresh_user(user)

    def refresh_user(self, user: models.User) -> scheduler.User:
        key = str(user.id)
        tier = "admin" if user.is_admin and "admin" in self.tiers else user.tier
        tier = scheduler.effective_tier(tier, user.tier_expires_at, self.clock())
        if tier not in self.tiers:
            tier = "free"
        old = self.users.get(key)
        snap = scheduler.User(key, tier, old.running if old else 0, user.credit)
        if snap != old:
            self.users[key] = snap
            self.version += 1
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
        if self.users.pop(str(user_id), None) is not None:
            self.version += 1
        self.usage.pop(user_id, None)

    def _add_running(self, user_id: int, delta: int) -> None:
        key = str(user_id)
        old = self.users.get(key) or scheduler.User(key, "free")
        self.users[key] = scheduler.User(key, old.tier, max(0, old.running + delta), old.credit)
        self.version += 1

    def _enqueue(self, job: Any) -> None:  # a models.Job, or a row of its columns
        self.queue[job.id] = scheduler.Job(
            id=job.id,
            user_id=str(job.user_id),
            enqueued_at=job.enqueued_at,
            batch_key=batch_key(job.model, job.steps, job.guidance),
            steps=job.steps,
            model=job.model,
            attempt=job.attempt,
            priority=job.priority,
        )
        self.owners[job.id] = job.user_id
        self.progress.pop(job.id, None)
        self.version += 1

    def enqueue(self, job: models.Job) -> None:
        """Put a committed, queued job in line and wake the dispatcher."""
        self._enqueue(job)
        self.publish(job.id)
        self.wake.set()

    def snapshot(self) -> scheduler.Snapshot:
        return scheduler.Snapshot(
            jobs=list(self.queue.values()),
            users=self.users,
            agents=[
                conn.snapshot()
                for conn in self.agents.values()
                if conn.owner_id not in self.suspended_owners
            ],
            tiers=self.tiers,
        )

    def positions(self) -> dict[str, scheduler.QueueEstimate]:
        """Every queued job's estimate; one computation per queue change, not per page."""
        now = self.clock()
        cached = self._positions
        if (
            cached is not None
            and cached[0] == self.version
            and 0 <= now - cached[1] < (POSITIONS_MAX_AGE_S)
        ):
            return cached[2]
        found = scheduler.queue_positions(self.snapshot(), now, self.fair, self.avg_job_s)
        self._positions = (self.version, now, found)
        return found

    def agents_changed(self) -> None:
        """An agent connected, left, or changed what it can take."""
        self.version += 1
        self.hub.publish("farm")
        self.wake.set()

    def publish(self, job_id: str, event: str = "changed") -> None:
        """Tell live pages a job changed; ``progress`` means only its live progress did."""
        self.hub.publish(f"job:{job_id}", event)
        owner = self.owners.get(job_id)
        if owner is not None:
            self.hub.publish(f"user:{owner}")
        self.hub.publish("farm")
        if event == "changed":
            for watcher in self.watchers:
                watcher(job_id, owner)

    # -- dispatch -----------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            waiters, self._next_pass = self._next_pass, None
            try:
                await self.dispatch_once()
            except Exception:
                log.exception("dispatch pass failed; retrying on the next event")
                await asyncio.sleep(0.5)
                self.wake.set()
            finally:
                if waiters is not None and not waiters.done():
                    waiters.set_result(None)

    async def dispatched(self, timeout_s: float = 1.0) -> None:
        """Wait (bounded) for the dispatch pass that follows this call to finish."""
        if not self._tasks or self._tasks[0].done():
            return
        if self._next_pass is None:
            self._next_pass = asyncio.get_running_loop().create_future()
        self.wake.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._next_pass), timeout_s)

    async def dispatch_once(self) -> int:
        # Anything may have changed since the last pass (it ran because of an event).
        self.version += 1
        if not self.queue or not any(conn.free for conn in self.agents.values()):
            return 0
        async with self._dispatching:
            started = time.perf_counter()
            plan = scheduler.plan(self.snapshot(), self.clock(), self.fair)
            self.fair = plan.state
            sent = await self._assign(plan.assignments)
            if sent:
                elapsed = time.perf_counter() - started
                self.dispatch_latency.append(elapsed)
                del self.dispatch_latency[:-1000]
                self.observe_dispatch(elapsed)
            return sent

    def observe_dispatch(self, seconds: float) -> None:
        self.dispatch_count += 1
        self.dispatch_sum_s += seconds
        for i, bound in enumerate(DISPATCH_BUCKETS_S):
            if seconds <= bound:
                self.dispatch_buckets[i] += 1

    async def _assign(self, assignments: tuple[scheduler.Assignment, ...]) -> int:
        """Claim a whole plan in one transaction, then send each agent its batch."""
        batches = [(conn, a.job_ids) for a in assignments if (conn := self.agents.get(a.agent_id))]
        if not batches:
            return 0
        taken = [job for _, ids in batches for i in ids if (job := self.queue.pop(i, None))]
        now = self.clock()
        try:
            claimed = await self.writer.run(
                lambda db: [
                    farm_units.claim(db, conn.id, job_ids, now + self.settings.lease_s)
                    for conn, job_ids in batches
                ]
            )
        except Exception:
            # Nothing was claimed (the transaction rolled back): put them back in line.
            for job in taken:
                if job.id in self.owners:
                    self.queue.setdefault(job.id, job)
            raise
        sent = 0
        for (conn, _), claimed_specs in zip(batches, claimed, strict=True):
            # A job settled (cancelled) while we waited for the claim is not sent.
            specs = [spec for spec in claimed_specs if spec.job in self.owners]
            sent_at = self.clock()
            for spec in specs:
                self.leases[spec.job] = scheduler.grant(
                    spec.job, conn.id, spec.attempt, now, self.settings.lease_s
                )
                self._add_running(self.owners[spec.job], +1)
                self.progress[spec.job] = LiveProgress(
                    stage="assigned", assigned_at=sent_at, batch=len(specs)
                )
            if specs:
                try:
                    await conn.send(Assign(jobs=tuple(specs)))
                except Exception:
                    # The socket died under us; the leases expire and requeue the jobs.
                    log.warning(
                        "agent %s vanished while being assigned %d jobs", conn.id, len(specs)
                    )
                for spec in specs:
                    self.publish(spec.job)
            sent += len(specs)
        return sent

    # -- leases -------------------------------------------------------------

    def renew(self, conn: AgentConn, job_ids: list[str] | None = None) -> None:
        now = self.clock()
        conn.last_seen = now
        for job_id, attempt in conn.session.held:
            lease = self.leases.get(job_id)
            if lease and lease.attempt == attempt and (job_ids is None or job_id in job_ids):
                self.leases[job_id] = scheduler.renew(lease, now, self.settings.lease_s)

    async def _lease_loop(self) -> None:
        interval = max(0.05, min(1.0, self.settings.lease_s / 10))
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reap_leases()
            except Exception:
                log.exception("lease reaper pass failed")

    async def reap_leases(self) -> int:
        lost = scheduler.expired(self.leases.values(), self.clock())
        for lease in lost:
            conn = self.agents.get(lease.agent_id)
            if conn is not None and conn.session.is_held(lease.job_id, lease.attempt):
                with contextlib.suppress(Exception):
                    await conn.send(
                        Cancel(job=lease.job_id, attempt=lease.attempt, reason="lease expired")
                    )
            await self.lose(lease.job_id, lease.attempt, "the agent stopped reporting")
        return len(lost)

    async def lose(self, job_id: str, attempt: int, why: str) -> None:
        """Attempt ``attempt`` of a job will not finish: requeue it in its old place or fail it."""
        lease = self.leases.get(job_id)
        if lease is None or lease.attempt != attempt:
            return
        del self.leases[job_id]
        self.progress.pop(job_id, None)
        owner = self.owners.get(job_id)
        if owner is not None:
            self._add_running(owner, -1)
        now, max_attempts = self.clock(), self.settings.max_attempts
        job = await self.writer.run(
            lambda db: farm_units.lose(db, job_id, attempt, why, now, max_attempts)
        )
        if job is None:
            return
        if job.state == JobState.QUEUED:
            self._enqueue(job)
        log.info("job %s attempt %d lost (%s): %s", job_id, attempt, why, job.state)
        self.publish(job_id)  # while its owner is still known (their pages, webhooks)
        if job.state != JobState.QUEUED:
            self.owners.pop(job_id, None)
        self.wake.set()

    def settle(self, job_id: str) -> None:
        """Forget the in-memory traces of a job that reached a final state."""
        if self.leases.pop(job_id, None) is not None:
            owner = self.owners.get(job_id)
            if owner is not None:
                self._add_running(owner, -1)
        self.queue.pop(job_id, None)
        self.progress.pop(job_id, None)
        self.publish(job_id)
        self.owners.pop(job_id, None)
        self.version += 1
        self.wake.set()

    def observe_duration(self, seconds: float) -> None:
        """Track the typical job time (EWMA) for queue ETAs."""
        if seconds > 0:
            self.avg_job_s = 0.8 * self.avg_job_s + 0.2 * seconds

    def agent_load(self) -> Counter[str]:
        return Counter(lease.agent_id for lease in self.leases.values())
