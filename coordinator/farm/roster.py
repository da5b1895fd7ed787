"""Replica mode: the agents each replica holds (``agent_presence``) and the bus outbox.

:class:`Roster` is the part of ``cluster.Cluster`` that writes this replica's presence
rows whenever one of its agents changes (only what changed, one note per change),
keeps every replica's connected agents in memory for pages and queue estimates, and
publishes notes in order through one background task.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any

import scheduler
from coordinator.farm import presence
from coordinator.farm.live import AgentConn
from coordinator.store.bus import Note

if TYPE_CHECKING:
    from coordinator.farm.engine import Farm

log = logging.getLogger(__name__)

OUTBOX_MAX = 10_000


class Roster:
    def __init__(self, farm: Farm, replica: str) -> None:
        self.farm, self.replica = farm, replica
        self._outbox: asyncio.Queue[Note] = asyncio.Queue(OUTBOX_MAX)
        self._spawned: set[asyncio.Task[Any]] = set()
        # Agents whose presence row this replica holds, as last written.
        self._held: dict[str, presence.Presence] = {}
        self._dirty: set[str] = set()
        self._dirty_event = asyncio.Event()
        # Every replica's connected agents (presence rows): what pages count and queue
        # estimates plan with; reread each heartbeat, sooner on an agent's note.
        self.everywhere: dict[str, presence.Presence] = {}

    async def publish(self, note: Note) -> None:
        """Put the note on the bus (the cluster's)."""
        raise NotImplementedError

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(work)
        self._spawned.add(task)
        task.add_done_callback(self._done)

    @staticmethod
    async def _run(work: Awaitable[None]) -> None:
        await work

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._spawned.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("replica task failed: %s", exc, exc_info=exc)

    # -- outgoing notes -------------------------------------------------------

    def send(self, note: Note) -> None:
        try:
            self._outbox.put_nowait(note)
        except asyncio.QueueFull:
            log.warning("bus outbox full: dropped %s (other replicas resync on reconnect)", note)

    async def _pump(self) -> None:
        while True:
            note = await self._outbox.get()
            try:
                await self.publish(note)
            except Exception as exc:
                log.warning("bus: could not publish %s: %s", note, exc)

    # -- presence -------------------------------------------------------------

    def touch(self, agent_ids: Iterable[str] | None = None) -> None:
        """These agents (None: every local one) changed: rewrite their presence rows."""
        if agent_ids is None:
            self._dirty.update(self.farm.agents)
            self._dirty.update(self._held)
        else:
            self._dirty.update(agent_ids)
        self._dirty_event.set()

    def _presence_of(self, agent_id: str) -> presence.Presence | None:
        conn = self.farm.agents.get(agent_id)
        if conn is None:
            if not any(lease.agent_id == agent_id for lease in self.farm.leases.values()):
                return None
            old = self._held.get(agent_id)
            models = old.models if old else frozenset()
            since = old.connected_at if old else 0.0
            return presence.Presence(
                agent_id, False, False, False, models, 1, 1, frozenset(), since
            )
        snap = conn.snapshot(free=True)
        available = conn.approved and not conn.closing and not conn.paused
        return presence.Presence(agent_id, True, conn.approved, available, snap.models,
                                 snap.max_batch, snap.max_steps, snap.preferred_users,
                                 conn.connected_at)  # fmt: skip

    async def _presence_loop(self) -> None:
        while True:
            await self._dirty_event.wait()
            self._dirty_event.clear()
            dirty, self._dirty = self._dirty, set()
            try:
                await self._write_presence(dirty)
            except Exception:
                log.exception("presence write failed; retrying")
                self._dirty |= dirty
                await asyncio.sleep(0.5)  # backoff before the retry
                self._dirty_event.set()

    async def _write_presence(self, agent_ids: set[str]) -> None:
        replica, now = self.replica, self.farm.clock()
        for agent_id in agent_ids:
            state = self._presence_of(agent_id)
            old = self._held.get(agent_id)
            if state == old:
                continue
            if state is None:
                await self.farm.writer.run(functools.partial(presence.release, replica=replica,
                                                             agent_id=agent_id))  # fmt: skip
                self._held.pop(agent_id, None)
                self.everywhere.pop(agent_id, None)
                self.send(Note("agent", agent_id, "changed"))
                continue
            await self.farm.writer.run(
                functools.partial(presence.hold, replica=replica, presence=state, now=now)
            )
            self._held[agent_id] = state
            if state.connected:
                self.everywhere[agent_id] = state
            else:
                self.everywhere.pop(agent_id, None)
            self.send(Note("agent", agent_id, "attached" if old is None else "changed"))

    async def held_elsewhere(self, agent_id: str) -> bool:
        """Is the agent connected to another replica?"""
        replica = await self.farm.writer.run(lambda db: presence.holder(db, agent_id))
        return replica is not None and replica != self.replica

    async def take_over(self, conn: AgentConn, holding: Iterable[tuple[str, int]]) -> None:
        """A connecting agent: the jobs the database says it holds become this replica's
        leases; those it still has are adopted, the rest wait out the reconnect grace."""
        farm, agent_id = self.farm, conn.id
        rows = await farm.writer.run(lambda db: presence.live_jobs(db, agent_id))
        farm.take_leases(conn, rows, set(holding))

    async def _reread(self, agent_id: str) -> None:
        """Another replica's agent changed: read its presence row again."""
        found = await self.farm.writer.run(lambda db: presence.connected(db, agent_id))
        if agent_id in found:
            self.everywhere[agent_id] = found[agent_id]
        else:
            self.everywhere.pop(agent_id, None)
        self.farm.remote_agents_changed()

    def snapshot_agents(self) -> list[scheduler.Agent]:
        """Every replica's connected, approved agents, for queue estimates (whether one is
        busy is the leader's to know: an available agent counts as one free slot)."""
        return [
            scheduler.Agent(
                p.agent_id,
                1 if p.available else 0,
                p.max_batch,
                p.max_steps,
                p.models,
                1,
                p.preferred_users,
            )
            for p in self.everywhere.values()
            if p.approved
        ]
