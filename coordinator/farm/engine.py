"""The farm: the live queue, connected agents, dispatch and leases.

The database is the source of truth for jobs; the farm keeps an in-memory
index of what the scheduler needs (queued jobs, leases, connected agents) so a
dispatch pass costs no query. Every state change goes to the database first,
then to memory, then out to agents and browsers.

:class:`Farm` is the one class the rest of the coordinator uses. Its parts live
in their own modules, one line of classes (see ``state.py``): ``state`` (the
state and its views), ``queue`` (users, waiting jobs, estimates), ``leases``,
``agents``, and here start-up, shutdown and dispatch.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from typing import Any

from sqlalchemy import select

import scheduler
from coordinator.farm import declines, inputs, lifecycle
from coordinator.farm.agents import FarmAgents
from coordinator.farm.cluster import Cluster
from coordinator.farm.live import AgentConn, LiveProgress
from coordinator.farm.queue import POSITIONS_MAX_AGE_S
from coordinator.farm.state import DISPATCH_BUCKETS_S
from coordinator.meshes.options import MeshRequest
from coordinator.store import models
from coordinator.store.bus import make_bus
from protocol import Assign, CloseCode, JobSpec
from scheduler.lifecycle import JobState

__all__ = ["DISPATCH_BUCKETS_S", "POSITIONS_MAX_AGE_S", "Farm"]

log = logging.getLogger(__name__)


class Farm(FarmAgents):
    """The farm: ``Farm(settings, sessions, hub, tiers, store, clock, tier_of=...)``
    (see :class:`~coordinator.farm.state.FarmState` for the arguments)."""

    # -- life cycle ---------------------------------------------------------

    async def start(self) -> None:
        async with self.sessions() as db:
            self._drained = set(
                await db.scalars(select(models.Agent.id).where(models.Agent.draining))
            )
            self._suspended = set(
                await db.scalars(select(models.User.id).where(models.User.banned))
            )
        held = await self.load_queue()
        if self.settings.replicas:
            # Replica mode: the replicas holding the agents hold their leases (taken over
            # from the database when an agent connects; see farm/cluster.py).
            self.cluster = Cluster(self, make_bus(self.settings.db_url))
            await self.cluster.start()
        else:
            now = self.clock()
            for job in held:
                # The agent may come back with its result; give it the grace
                # period, then the lease reaper puts the job back in line.
                self._owners[job.id] = job.user_id
                self._add_running(job.user_id, +1)
                self._mesh[job.id] = MeshRequest(job.mesh_target_faces, bool(job.mesh_printable))
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

    async def load_queue(self) -> list[Any]:
        """(Re)build the queue index from the database; returns the assigned and running
        jobs (rows of their columns)."""
        async with self.sessions() as db:
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
            # The queued ones go in line at once: each user's line is sorted once.
            job_ = models.Job
            rows = await db.execute(
                select(
                    job_.id, job_.user_id, job_.state, job_.enqueued_at, job_.model, job_.steps,
                    job_.guidance, job_.attempt, job_.priority, job_.agent_id, job_.image_sha256,
                    job_.mesh_target_faces, job_.mesh_printable,
                ).where(job_.state.in_(live))
            )  # fmt: skip
            queued: list[Any] = []
            held: list[Any] = []
            for job in rows:
                (queued if job.state == JobState.QUEUED else held).append(job)
            refused: dict[str, set[str]] = {}
            for row in await db.execute(declines.of_queued_jobs()):
                refused.setdefault(row.job_id, set()).add(row.agent_id)
        for job_id, agents in refused.items():
            self.known_declines(job_id, frozenset(agents))
        for job_id in [job_id for job_id in self._queue if job_id not in self._leases]:
            self._owners.pop(job_id, None)
        self._queue = scheduler.QueueIndex()
        self._enqueue_all(queued)
        return held

    async def stop(self) -> None:
        if self.cluster is not None:
            await self.cluster.stop()
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
        if self.cluster is not None:
            return await self.cluster.dispatch()  # the leader's, over every replica
        if not self._queue or not any(self._available(conn) for conn in self._agents.values()):
            return 0
        async with self._dispatching:
            started = time.perf_counter()
            plan = self.plan()
            sent = await self._assign(plan.assignments)
            if sent:
                self.observe_dispatch(time.perf_counter() - started)
            return sent

    def plan(self, agents: list[scheduler.Agent] | None = None) -> scheduler.Plan:
        """One scheduler pass over the queue and ``agents`` (default: the connected ones)."""
        snapshot = self.snapshot()
        if agents is not None:
            snapshot = dataclasses.replace(snapshot, agents=agents)
        plan = scheduler.plan(snapshot, self.clock(), self._fair)
        self._fair = plan.state
        return plan

    async def deliver_claimed(self, conn: AgentConn, claimed: list[tuple[JobSpec, int]]) -> int:
        """Replica mode: send the agent the jobs the leader claimed for it (with owners)."""
        for spec, owner in claimed:
            self._owners[spec.job] = owner
        specs = [spec for spec, _ in claimed]
        if conn.closing:
            # Being cut off: no send; the leases run out and requeue the jobs.
            deadline = self.clock() + self.settings.reconnect_grace_s
            for spec in specs:
                self._leases[spec.job] = scheduler.Lease(spec.job, conn.id, spec.attempt, deadline)
            return 0
        return await self.deliver(conn, specs, self.clock())

    async def take_over(self, conn: AgentConn, holding: tuple[tuple[str, int], ...]) -> None:
        """A connecting agent's jobs that it still holds stay its own (replica mode: as the
        database says, whichever replica it held them through)."""
        if self.cluster is not None:
            await self.cluster.take_over(conn, holding)
        else:
            self.adopt(conn, holding)

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
        taken = [job for _, ids in batches for i in ids if (job := self._queue.discard(i))]
        now = self.clock()
        try:
            claimed = await self.writer.run(
                lambda db: [lifecycle.claim(db, conn.id, job_ids) for conn, job_ids in batches]
            )
        except Exception:
            # Nothing was claimed (the transaction rolled back): put them back in line.
            for job in taken:
                if job.id in self._owners and job.id not in self._queue:
                    self._queue.add(job)
            raise
        sent = 0
        for (conn, _), claimed_specs in zip(batches, claimed, strict=True):
            # A job settled (cancelled) while we waited for the claim is not sent.
            sent += await self.deliver(
                conn, [spec for spec in claimed_specs if spec.job in self._owners], now
            )
        return sent

    async def deliver(self, conn: AgentConn, specs: list[JobSpec], claimed_at: float) -> int:
        """Lease the claimed jobs to the agent and send them (one batch)."""
        sent_at = self.clock()
        for spec in specs:
            self._leases[spec.job] = scheduler.grant(
                spec.job, conn.id, spec.attempt, claimed_at, self.settings.lease_s
            )
            self._add_running(self._owners[spec.job], +1)
            self._mesh[spec.job] = MeshRequest.of_wire(spec.mesh)
            self._progress[spec.job] = LiveProgress(
                stage="assigned", assigned_at=sent_at, batch=len(specs)
            )
        if specs:
            try:
                assign = Assign(jobs=tuple(specs))
                await conn.send_assign(assign, await inputs.image_for(self.store, assign))
            except Exception:
                # The socket died under us; the leases expire and requeue the jobs.
                log.warning("agent %s vanished while being assigned %d jobs", conn.id, len(specs))
            for spec in specs:
                self.publish(spec.job)
        return len(specs)
