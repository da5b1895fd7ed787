"""The farm's agents: connect and disconnect, their status, and what admins and
owners do to them (approve, drain, resume, kick, revoke, suspend their owner)."""

from __future__ import annotations

import contextlib

from coordinator.farm.leases import FarmLeases
from coordinator.farm.live import AgentConn, AgentStatus, agent_status
from coordinator.store import models
from protocol import Cancel


class FarmAgents(FarmLeases):
    """Connected agents and the drains and suspensions that outlive a connection."""

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

    def is_suspended(self, owner_id: int) -> bool:
        return owner_id in self._suspended

    def is_drained(self, agent_id: str) -> bool:
        return agent_id in self._drained

    def replace_agent(self, conn: AgentConn) -> AgentConn | None:
        """A new connection of an agent arrives: take out the old one (returned, to close)."""
        return self._agents.pop(conn.id, None)

    def register(self, conn: AgentConn) -> None:
        """The agent is welcomed: it may now be planned for."""
        self._agents[conn.id] = conn
        self.renew(conn)
        self.agents_changed()

    def unregister(self, conn: AgentConn) -> None:
        """The connection is gone: its leases shrink to the reconnect grace."""
        if self._agents.get(conn.id) is conn:
            del self._agents[conn.id]
        self._shrink_leases(conn.id)
        self.agents_changed()

    def forget_agent(self, agent_id: str) -> AgentConn | None:
        """Replica mode: the agent connected to another replica, which took its leases
        over from the database; drop ours and return our old connection, to close."""
        conn = self._agents.pop(agent_id, None)
        if conn is not None:
            conn.closing = True
        for job_id, lease in list(self._leases.items()):
            if lease.agent_id == agent_id:
                del self._leases[job_id]
                self._mesh.pop(job_id, None)
        self.remote_agents_changed()
        return conn

    async def connected_anywhere(self, agent_id: str) -> bool:
        """Connected here or (replica mode) to another replica."""
        if agent_id in self._agents:
            return True
        return self.cluster is not None and await self.cluster.held_elsewhere(agent_id)

    async def stop_attempt(self, agent_id: str, job_id: str, attempt: int, why: str) -> None:
        """Tell the agent to stop an attempt it holds: here, or (replica mode) through
        the replica that holds its socket."""
        conn = self._agents.get(agent_id)
        if conn is not None:
            if conn.session.is_held(job_id, attempt):
                with contextlib.suppress(Exception):  # a dead socket: the leases handle it
                    await conn.send(Cancel(job=job_id, attempt=attempt, reason=why))
        elif self.cluster is not None:
            self.cluster.cancel_remote(agent_id, job_id, attempt, why)

    def approve_agent(self, agent_id: str) -> None:
        conn = self._agents.get(agent_id)
        if conn is not None:
            conn.approved = True
        self.agents_changed()  # it may take queued work right away

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
