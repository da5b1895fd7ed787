"""The farm: the live queue, connected agents, dispatch and leases.

The database is the source of truth for jobs; the farm keeps an in-memory
index of what the scheduler needs (queued jobs, leases, connected agents) so a
dispatch pass costs no query. Every state change goes to the database first,
then to memory, then out to agents and browsers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

import scheduler
from coordinator.farm import inputs, lifecycle
from coordinator.farm.events import EventHub
from coordinator.farm.live import (
    AgentConn,
    AgentStatus,
    DailyUsage,
    LiveProgress,
    agent_status,
    batch_key,
)
from coordinator.settings import Settings
from coordinator.store import models
from coordinator.store.db import Reader, Writer
from coordinator.store.keycache import KeyCache
from coordinator.store.modelfiles import ModelFiles, glb_limits
from coordinator.store.storage import BlobStore
from protocol import Assign, Cancel, CloseCode
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
        *,
        tier_of: Callable[[models.User, float], str],
    ) -> None:
        """``tier_of(user, now)``: the user's effective tier (services.entitlement.policy);
        handed in because the rule lives above the farm, with the subscriptions."""
        self.settings = settings
        self.tier_of = tier_of
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
        self._queue: dict[str, scheduler.Job] = {}
        self._owners: dict[str, int] = {}  # job id -> user id, for queued and leased jobs
        self._users: dict[str, scheduler.User] = {}
        self._leases: dict[str, scheduler.Lease] = {}
        self._agents: dict[str, AgentConn] = {}
        self._progress: dict[str, LiveProgress] = {}
        self._fair = scheduler.FairState()
        self._wake = asyncio.Event()
        self.avg_job_s = 30.0
        # Cumulative histogram of dispatch passes that sent work, for /metrics.
        self.dispatch_buckets = [0] * len(DISPATCH_BUCKETS_S)
        self.dispatch_count = 0
        self.dispatch_sum_s = 0.0
        # Agents an admin drained: they stay drained across reconnects until resumed.
        self._drained: set[str] = set()
        # Users whose account is suspended: their agents get no work and are refused.
        self._suspended: set[int] = set()
        # job id -> agents that declined it (their owner's blocklist): never offered again.
        self._declined: dict[str, set[str]] = {}
        self._decline_refunds: dict[str, int] = {}  # job id -> declines that spent no try
        # user id -> submissions in the last day (see jobs.submit)
        self._usage: dict[int, DailyUsage] = {}
        # user id -> lock held by a submission from its admission check until its jobs
        # are queued (see submitting); gone once nobody holds or awaits it.
        self._submitting: weakref.WeakValueDictionary[int, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._dispatching = asyncio.Lock()
        # Bumped whenever anything queue estimates depend on may have changed.
        self._version = 0
        self._positions: tuple[int, float, dict[str, scheduler.QueueEstimate]] | None = None
        # Called with a job id whenever a job reaches a final state (e.g. to mail its owner).
        self._finished_hooks: list[Callable[[str], None]] = []
        # Called with (job id, owner) on every change of a live job (webhooks watch here).
        self._watchers: list[Callable[[str, int | None], None]] = []

    # -- life cycle ---------------------------------------------------------

    async def start(self) -> None:
        now = self.clock()
        async with self.sessions() as db:
            self._drained = set(
                await db.scalars(select(models.Agent.id).where(models.Agent.draining))
            )
            self._suspended = set(
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
                    job_.guidance, job_.attempt, job_.priority, job_.agent_id, job_.image_sha256,
                ).where(job_.state.in_(live))
            )  # fmt: skip
            for job in rows:
                if job.state == JobState.QUEUED:
                    self._enqueue(job)
                else:
                    # The agent may come back with its result; give it the grace
                    # period, then the lease reaper puts the job back in line.
                    self._owners[job.id] = job.user_id
                    self._add_running(job.user_id, +1)
                    self._leases[job.id] = scheduler.Lease(
                        job.id,
                        job.agent_id or "",
                        job.attempt,
                        now + self.settings.reconnect_grace_s,
                    )
        self._tasks = [
            asyncio.create_task(self._dispatch_loop(), name="dispatch"),
            asyncio.create_task(self._lease_loop(), name="leases"),
        ]
        self._wake.set()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for conn in list(self._agents.values()):
            with contextlib.suppress(Exception):
                await conn.close(CloseCode.GOING_AWAY, "coordinator shutting down")
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

    def _enqueue(self, job: Any) -> None:  # a models.Job, or a row of its columns
        self._queue[job.id] = scheduler.Job(
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
        self._owners[job.id] = job.user_id
        self._progress.pop(job.id, None)
        self.version_bump()

    def enqueue(self, job: models.Job) -> None:
        """Put a committed, queued job in line and wake the dispatcher."""
        self._enqueue(job)
        self.publish(job.id)
        self._wake.set()

    def snapshot(self) -> scheduler.Snapshot:
        return scheduler.Snapshot(
            jobs=list(self._queue.values()),
            users=self._users,
            agents=[
                conn.snapshot(free=self._available(conn))
                for conn in self._agents.values()
                if conn.owner_id not in self._suspended
            ],
            tiers=self.tiers,
        )

    def positions(self) -> dict[str, scheduler.QueueEstimate]:
        """Every queued job's estimate; one computation per queue change, not per page."""
        now = self.clock()
        cached = self._positions
        if (
            cached is not None
            and cached[0] == self._version
            and 0 <= now - cached[1] < (POSITIONS_MAX_AGE_S)
        ):
            return cached[2]
        found = scheduler.queue_positions(self.snapshot(), now, self._fair, self.avg_job_s)
        self._positions = (self._version, now, found)
        return found

    def agents_changed(self) -> None:
        """An agent connected, left, or changed what it can take."""
        self.version_bump()
        self.hub.publish("farm")
        self._wake.set()

    def publish(self, job_id: str, event: str = "changed") -> None:
        """Tell live pages a job changed; ``progress`` means only its live progress did."""
        self.hub.publish(f"job:{job_id}", event)
        owner = self._owners.get(job_id)
        if owner is not None:
            self.hub.publish(f"user:{owner}")
        self.hub.publish("farm")
        if event == "changed":
            for watcher in self._watchers:
                watcher(job_id, owner)

    # -- read-only views of the live state ---------------------------------
    # Everything else reads the farm through these; only the farm changes it.

    @property
    def queue(self) -> Mapping[str, scheduler.Job]:
        return MappingProxyType(self._queue)

    @property
    def users(self) -> Mapping[str, scheduler.User]:
        return MappingProxyType(self._users)

    @property
    def leases(self) -> Mapping[str, scheduler.Lease]:
        return MappingProxyType(self._leases)

    @property
    def agents(self) -> Mapping[str, AgentConn]:
        return MappingProxyType(self._agents)

    @property
    def progress(self) -> Mapping[str, LiveProgress]:
        return MappingProxyType(self._progress)

    @property
    def version(self) -> int:
        """Bumped whenever queue estimates may have changed."""
        return self._version

    def owner_of(self, job_id: str) -> int | None:
        """The user whose job waits or runs here (None once it left the farm)."""
        return self._owners.get(job_id)

    def active_owners(self) -> frozenset[int]:
        """Users with a job waiting or leased: the snapshots the scheduler reads."""
        return frozenset(self._owners.values())

    @property
    def drained(self) -> frozenset[str]:
        return frozenset(self._drained)

    @property
    def suspended_owners(self) -> frozenset[int]:
        return frozenset(self._suspended)

    def agents_online(self) -> int:
        """Connected agents that may take work (approved; draining ones still serve)."""
        return sum(1 for conn in self._agents.values() if conn.approved)

    def queued_by_tier(self) -> dict[str, list[scheduler.Job]]:
        """The waiting jobs per effective tier: every tier listed, in rank order."""
        grouped: dict[str, list[scheduler.Job]] = {
            tier.name: [] for tier in sorted(self.tiers.values(), key=lambda tier: tier.rank)
        }
        for job in self._queue.values():
            user = self._users.get(job.user_id)
            grouped.setdefault(user.tier if user else scheduler.FREE_TIER, []).append(job)
        return grouped

    def nudge(self) -> None:
        """Something a dispatch pass depends on changed (weights, caps, approvals)."""
        self.version_bump()
        self._wake.set()

    def version_bump(self) -> None:
        """Queue estimates may have changed (see ``positions``)."""
        self._version += 1

    def _available(self, conn: AgentConn) -> bool:
        return conn.idle and conn.id not in self._drained and conn.owner_id not in self._suspended

    def status_of(self, agent: models.Agent, owner_banned: bool) -> AgentStatus:
        """The one definition of an enrolled agent's status (pages and /metrics)."""
        return agent_status(
            revoked=agent.revoked,
            owner_suspended=owner_banned or agent.owner_id in self._suspended,
            approved=agent.approved,
            draining=agent.id in self._drained,
            paused=(conn := self._agents.get(agent.id)) is not None and conn.paused,
        )

    def conn_status(self, conn: AgentConn) -> AgentStatus:
        return agent_status(
            revoked=False,
            owner_suspended=conn.owner_id in self._suspended,
            approved=conn.approved,
            draining=conn.id in self._drained or conn.closing,
            paused=conn.paused,
        )

    def usage_of(self, user_id: int) -> DailyUsage | None:
        return self._usage.get(user_id)

    def remember_usage(self, user_id: int, usage: DailyUsage) -> DailyUsage:
        """Keep a user's usage read from the database, unless a racing reader did first."""
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
        self._queue[job_id] = dataclasses.replace(queued, priority=priority)
        self.nudge()
        return True

    # -- agents: connect, disconnect and what admins and owners do to them --

    def is_suspended(self, owner_id: int) -> bool:
        return owner_id in self._suspended

    def is_drained(self, agent_id: str) -> bool:
        return agent_id in self._drained

    def replace_agent(self, conn: AgentConn) -> AgentConn | None:
        """A new connection of an agent arrives: take out the old one (returned, to close)."""
        return self._agents.pop(conn.id, None)

    def adopt(self, conn: AgentConn, holding: Iterable[tuple[str, int]]) -> None:
        """The jobs a reconnecting agent still holds stay its own if their leases say so."""
        for job_id, attempt in holding:
            lease = self._leases.get(job_id)
            if lease is not None and lease.attempt == attempt and lease.agent_id == conn.id:
                conn.session.adopt(job_id, attempt)

    def register(self, conn: AgentConn) -> None:
        """The agent is welcomed: it may now be planned for."""
        self._agents[conn.id] = conn
        self.renew(conn)
        self.agents_changed()

    def unregister(self, conn: AgentConn) -> None:
        """The connection is gone: its leases shrink to the reconnect grace."""
        if self._agents.get(conn.id) is conn:
            del self._agents[conn.id]
        deadline = self.clock() + self.settings.reconnect_grace_s
        for job_id, lease in list(self._leases.items()):
            if lease.agent_id == conn.id and lease.expires_at > deadline:
                self._leases[job_id] = dataclasses.replace(lease, expires_at=deadline)
        self.agents_changed()

    def approve_agent(self, agent_id: str) -> None:
        conn = self._agents.get(agent_id)
        if conn is not None:
            conn.approved = True
        self.agents_changed()  # it may take queued work right away

    async def _lose_held(self, agent_ids: set[str], why: str) -> None:
        for lease in [lease for lease in self._leases.values() if lease.agent_id in agent_ids]:
            await self.lose(lease.job_id, lease.attempt, why)

    async def revoke_agent(self, agent_id: str) -> AgentConn | None:
        """The token is refused from now on: cut the connection (returned, to tell and
        close) out of the farm and requeue its work at once (it cannot come back)."""
        self._drained.discard(agent_id)
        conn = self._agents.pop(agent_id, None)
        if conn is not None:
            conn.closing = True
        await self._lose_held({agent_id}, "its agent was revoked")
        self.agents_changed()
        return conn

    def drain_agent(self, agent_id: str) -> AgentConn | None:
        """No new work for the agent, across reconnects; returns its connection if one
        should be told (connected and not already closing)."""
        self._drained.add(agent_id)
        self.agents_changed()
        conn = self._agents.get(agent_id)
        return conn if conn is not None and not conn.closing else None

    def resume_agent(self, agent_id: str) -> AgentConn | None:
        """Lift a drain; returns the connection to close so that the agent reconnects
        ready for work (draining ends only with the connection, docs/protocol.md)."""
        self._drained.discard(agent_id)
        self.agents_changed()
        return self._agents.get(agent_id)

    def kick_agent(self, agent_id: str) -> AgentConn | None:
        """Mark a connection as closing (no assignment may race its close); returns it."""
        conn = self._agents.get(agent_id)
        if conn is not None:
            conn.closing = True
            self.agents_changed()
        return conn

    async def suspend_owner(self, owner_id: int) -> list[AgentConn]:
        """The owner is banned: their agents leave the farm (returned, to tell and close)
        and the jobs they held go back in line at once."""
        self._suspended.add(owner_id)
        conns = [conn for conn in self._agents.values() if conn.owner_id == owner_id]
        for conn in conns:
            conn.closing = True  # before any await: no dispatch pass may pick it
            self._agents.pop(conn.id, None)
        await self._lose_held({conn.id for conn in conns}, "its agent's owner was suspended")
        self.agents_changed()
        return conns

    def restore_owner(self, owner_id: int) -> None:
        """After an unban the owner's agents may connect again."""
        self._suspended.discard(owner_id)
        self.agents_changed()

    # -- dispatch -----------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.dispatch_once()
            except Exception:
                log.exception("dispatch pass failed; retrying on the next event")
                await asyncio.sleep(0.5)
                self._wake.set()

    async def dispatch_once(self) -> int:
        # Anything may have changed since the last pass (it ran because of an event).
        self.version_bump()
        if not self._queue or not any(self._available(conn) for conn in self._agents.values()):
            return 0
        async with self._dispatching:
            started = time.perf_counter()
            plan = scheduler.plan(self.snapshot(), self.clock(), self._fair)
            self._fair = plan.state
            sent = await self._assign(plan.assignments)
            if sent:
                self.observe_dispatch(time.perf_counter() - started)
            return sent

    def observe_dispatch(self, seconds: float) -> None:
        self.dispatch_count += 1
        self.dispatch_sum_s += seconds
        for i, bound in enumerate(DISPATCH_BUCKETS_S):
            if seconds <= bound:
                self.dispatch_buckets[i] += 1

    async def _assign(self, assignments: tuple[scheduler.Assignment, ...]) -> int:
        """Claim a whole plan in one transaction, then send each agent its batch."""
        batches = [(conn, a.job_ids) for a in assignments if (conn := self._agents.get(a.agent_id))]
        if not batches:
            return 0
        taken = [job for _, ids in batches for i in ids if (job := self._queue.pop(i, None))]
        now = self.clock()
        try:
            claimed = await self.writer.run(
                lambda db: [lifecycle.claim(db, conn.id, job_ids) for conn, job_ids in batches]
            )
        except Exception:
            # Nothing was claimed (the transaction rolled back): put them back in line.
            for job in taken:
                if job.id in self._owners:
                    self._queue.setdefault(job.id, job)
            raise
        sent = 0
        for (conn, _), claimed_specs in zip(batches, claimed, strict=True):
            # A job settled (cancelled) while we waited for the claim is not sent.
            specs = [spec for spec in claimed_specs if spec.job in self._owners]
            sent_at = self.clock()
            for spec in specs:
                self._leases[spec.job] = scheduler.grant(
                    spec.job, conn.id, spec.attempt, now, self.settings.lease_s
                )
                self._add_running(self._owners[spec.job], +1)
                self._progress[spec.job] = LiveProgress(
                    stage="assigned", assigned_at=sent_at, batch=len(specs)
                )
            if specs:
                try:
                    assign = Assign(jobs=tuple(specs))
                    await conn.send_assign(assign, await inputs.image_for(self.store, assign))
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
            lease = self._leases.get(job_id)
            if lease and lease.attempt == attempt and (job_ids is None or job_id in job_ids):
                self._leases[job_id] = scheduler.renew(lease, now, self.settings.lease_s)

    async def _lease_loop(self) -> None:
        interval = max(0.05, min(1.0, self.settings.lease_s / 10))
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reap_leases()
            except Exception:
                log.exception("lease reaper pass failed")

    async def reap_leases(self) -> int:
        lost = scheduler.expired(self._leases.values(), self.clock())
        for lease in lost:
            conn = self._agents.get(lease.agent_id)
            if conn is not None and conn.session.is_held(lease.job_id, lease.attempt):
                with contextlib.suppress(Exception):
                    await conn.send(
                        Cancel(job=lease.job_id, attempt=lease.attempt, reason="lease expired")
                    )
            await self.lose(lease.job_id, lease.attempt, "the agent stopped reporting")
        return len(lost)

    async def lose(self, job_id: str, attempt: int, why: str) -> None:
        """Attempt ``attempt`` of a job will not finish: requeue it in its old place or fail it."""
        lease = self._leases.get(job_id)
        if lease is None or lease.attempt != attempt:
            return
        del self._leases[job_id]
        self._progress.pop(job_id, None)
        owner = self._owners.get(job_id)
        if owner is not None:
            self._add_running(owner, -1)
        now, max_attempts = self.clock(), self.settings.max_attempts
        job = await self.writer.run(
            lambda db: lifecycle.lose(db, job_id, attempt, why, now, max_attempts)
        )
        if job is None:
            return
        if job.state == JobState.QUEUED:
            self._enqueue(job)
        log.info("job %s attempt %d lost (%s): %s", job_id, attempt, why, job.state)
        self.publish(job_id)  # while its owner is still known (their pages, webhooks)
        if job.state != JobState.QUEUED:
            self._owners.pop(job_id, None)
            self._forget_declines(job_id)
            self._finished(job_id)
        self._wake.set()

    def settle(self, job_id: str) -> None:
        """Forget the in-memory traces of a job that reached a final state."""
        if self._leases.pop(job_id, None) is not None:
            owner = self._owners.get(job_id)
            if owner is not None:
                self._add_running(owner, -1)
        self._queue.pop(job_id, None)
        self._progress.pop(job_id, None)
        self._forget_declines(job_id)
        self.publish(job_id)
        self._owners.pop(job_id, None)
        self.version_bump()
        self._wake.set()
        self._finished(job_id)

    def watch(self, watcher: Callable[[str, int | None], None]) -> None:
        """Call ``watcher(job_id, owner)`` on every change of a live job (API webhooks)."""
        self._watchers.append(watcher)

    def unwatch(self, watcher: Callable[[str, int | None], None]) -> None:
        with contextlib.suppress(ValueError):
            self._watchers.remove(watcher)

    def on_finished(self, hook: Callable[[str], None]) -> None:
        """Call ``hook(job_id)`` whenever a job reaches a final state (e.g. job e-mails)."""
        self._finished_hooks.append(hook)

    def _finished(self, job_id: str) -> None:
        for hook in self._finished_hooks:
            try:
                hook(job_id)
            except Exception:
                log.exception("a finished-job hook failed for %s", job_id)

    def observe_duration(self, seconds: float) -> None:
        """Track the typical job time (EWMA) for queue ETAs."""
        if seconds > 0:
            self.avg_job_s = 0.8 * self.avg_job_s + 0.2 * seconds
