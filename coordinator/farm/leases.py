"""The farm's leases: renewed by agents' reports, reaped when they run out, and what
happens to a job whose attempt is lost (back in line in its old place, or failed)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Iterable

import scheduler
from coordinator.farm import lifecycle
from coordinator.farm.finals import FinalRow
from coordinator.farm.live import AgentConn
from coordinator.farm.queue import FarmQueue
from protocol import Cancel
from scheduler.lifecycle import JobState

log = logging.getLogger(__name__)


class FarmLeases(FarmQueue):
    """Leases on assigned jobs and the end of a job's time in the farm."""

    def adopt(self, conn: AgentConn, holding: Iterable[tuple[str, int]]) -> None:
        """The jobs a reconnecting agent still holds stay its own if their leases say so."""
        for job_id, attempt in holding:
            lease = self._leases.get(job_id)
            if lease is not None and lease.attempt == attempt and lease.agent_id == conn.id:
                conn.session.adopt(job_id, attempt)

    def take_leases(
        self, conn: AgentConn, rows: list[tuple[str, int, int]], holding: set[tuple[str, int]]
    ) -> None:
        """Replica mode: the (job, attempt, owner) rows the database says a connecting
        agent holds become leases here; those it still has are adopted, the rest last
        the reconnect grace (then they are lost)."""
        now, s = self.clock(), self.settings
        for job_id, attempt, owner in rows:
            self._owners[job_id] = owner
            kept = (job_id, attempt) in holding
            if kept:
                conn.session.adopt(job_id, attempt)
            expires = now + (s.lease_s if kept else s.reconnect_grace_s)
            self._leases[job_id] = scheduler.Lease(job_id, conn.id, attempt, expires)

    def drop_lease(self, job_id: str) -> None:
        """Replica mode: the attempt ended elsewhere (its replica was reaped)."""
        if self._leases.pop(job_id, None) is not None:
            self._progress.pop(job_id, None)
            self._mesh.pop(job_id, None)

    def _shrink_leases(self, agent_id: str) -> None:
        """The agent's connection is gone: its leases last at most the reconnect grace."""
        deadline = self.clock() + self.settings.reconnect_grace_s
        for job_id, lease in list(self._leases.items()):
            if lease.agent_id == agent_id and lease.expires_at > deadline:
                self._leases[job_id] = dataclasses.replace(lease, expires_at=deadline)

    async def _lose_held(self, agent_ids: set[str], why: str) -> None:
        for lease in [lease for lease in self._leases.values() if lease.agent_id in agent_ids]:
            await self.lose(lease.job_id, lease.attempt, why)

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
        self._mesh.pop(job_id, None)
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
            if self.cluster is not None:
                self.cluster.settled(job_id)
        self._wake.set()

    def settle(
        self, job_id: str, final: FinalRow | None = None, model: bytes | None = None
    ) -> None:
        """Forget the in-memory traces of a job that reached a final state; ``final``: its
        rows as the transaction that finished it committed them, and ``model`` the GLB it
        stored, kept briefly (``finals.py``) so that the event streams woken here and the
        download that follows need not read them back."""
        if final is not None:
            self._final.keep(job_id, final, model)
        else:
            self._final.forget(job_id)
        self._forget_traces(job_id)
        self.publish(job_id)  # while its owner is still known
        self._owners.pop(job_id, None)
        self.version_bump()
        self._wake.set()
        if self.cluster is not None:
            self.cluster.settled(job_id)

    def final_row(self, job_id: str) -> FinalRow | None:
        """The committed rows of a job that finished here moments ago (None: read them);
        a local change to the row since drops them (``forget_final``)."""
        return self._final.get(job_id)

    def take_model(self, job_id: str) -> bytes | None:
        """The GLB a job that finished here moments ago stored (None: read the store);
        given out once."""
        return self._final.take_model(job_id)

    def forget_final(self, job_id: str) -> None:
        """A finished job's row changed or went (visibility, deletion): read it again."""
        self._final.forget(job_id)

    def forget_job(self, job_id: str) -> None:
        """Replica mode: another replica settled the job."""
        self._forget_traces(job_id)
        self._owners.pop(job_id, None)
        self.hub.publish("farm")
        self.version_bump()
        self._wake.set()

    def _forget_traces(self, job_id: str) -> None:
        if self._leases.pop(job_id, None) is not None:
            owner = self._owners.get(job_id)
            if owner is not None:
                self._add_running(owner, -1)
        self._queue.discard(job_id)
        self._progress.pop(job_id, None)
        self._mesh.pop(job_id, None)
        self._forget_declines(job_id)
