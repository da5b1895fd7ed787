"""Agent control shared by the admin console and the volunteer page.

Every action writes the database (with an audit entry) first, then acts on the
live connection, if any: approve lets a connected agent take work at once,
revoke disconnects it with close code 4401 and requeues what it held, drain
stops new work while it finishes what it holds, disconnect drops the socket
and lets the lease machinery decide what happens to its jobs. Banning a user
suspends all of their agents (``suspend_owner``): cut off with close code 4403
and refused until the unban (``restore_owner``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator import audit, models
from coordinator.farm import Farm
from coordinator.live import AgentConn, LiveProgress
from protocol import Drain, Error

CLOSE_REVOKED = 4401
CLOSE_KICKED = 1001  # the agent reconnects with backoff, naming the jobs it still holds
CLOSE_RESUMED = 1000  # draining only ends with the connection (docs/protocol.md §8)
CLOSE_SUSPENDED = 4403  # not allowed now: the reference agent retries every 30 s
SUSPENDED_MESSAGE = "owner_suspended: the account that owns this agent is suspended"


class AgentControlError(ValueError):
    """An action that does not apply to this agent; the message says why."""


@dataclass(frozen=True)
class HeldJob:
    job_id: str
    attempt: int
    progress: LiveProgress | None


@dataclass(frozen=True)
class AgentView:
    """An enrolled agent with its live connection state, for the pages."""

    agent: models.Agent
    owner: str
    conn: AgentConn | None
    held: tuple[HeldJob, ...]
    drained: bool
    now: float
    owner_banned: bool = False

    @property
    def online(self) -> bool:
        return self.conn is not None

    @property
    def status(self) -> str:
        if self.agent.revoked:
            return "revoked"
        if self.owner_banned:
            return "owner suspended"
        if not self.agent.approved:
            return "pending"
        if self.drained or (self.conn is not None and self.conn.draining):
            return "draining"
        if self.conn is not None and self.conn.paused:
            return "paused"
        return "approved"

    @property
    def average_s(self) -> float | None:
        a = self.agent
        return a.gpu_seconds / a.jobs_done if a.jobs_done else None

    @property
    def uptime_s(self) -> float | None:
        return self.now - self.conn.connected_at if self.conn is not None else None

    @property
    def last_seen(self) -> float | None:
        return self.conn.last_seen if self.conn is not None else self.agent.last_seen_at


def _view(farm: Farm, agent: models.Agent, owner: str, banned: bool) -> AgentView:
    conn = farm.agents.get(agent.id)
    held = tuple(
        HeldJob(job_id, attempt, farm.progress.get(job_id))
        for job_id, attempt in sorted(conn.session.held if conn else ())
    )
    return AgentView(agent, owner, conn, held, agent.id in farm.drained, farm.clock(), banned)


async def list_agents(
    farm: Farm, db: AsyncSession, owner_id: int | None = None, include_revoked: bool = True
) -> list[AgentView]:
    """Agents (of one owner, or all), online ones first, newest enrollment next."""
    query = select(models.Agent, models.User.username, models.User.banned).join(
        models.User, models.User.id == models.Agent.owner_id
    )
    if owner_id is not None:
        query = query.where(models.Agent.owner_id == owner_id)
    if not include_revoked:
        query = query.where(models.Agent.revoked.is_(False))
    rows = await db.execute(query.order_by(models.Agent.created_at.desc(), models.Agent.id))
    views = [_view(farm, agent, owner, banned) for agent, owner, banned in rows]
    return sorted(views, key=lambda v: not v.online)


async def get_agent(db: AsyncSession, agent_id: str) -> models.Agent | None:
    return await db.get(models.Agent, agent_id)


async def approve(farm: Farm, db: AsyncSession, agent: models.Agent, actor: models.User) -> None:
    if agent.revoked:
        raise AgentControlError("A revoked agent cannot be approved; enroll it again.")
    agent.approved = True
    audit.record(db, actor, "agent.approve", agent.id, agent.name, farm.clock())
    await db.commit()
    conn = farm.agents.get(agent.id)
    if conn is not None:
        conn.approved = True
    farm.hub.publish("farm")
    farm.wake.set()  # it may take queued work right away


async def revoke(farm: Farm, db: AsyncSession, agent: models.Agent, actor: models.User) -> None:
    """Refuse the token from now on; a connected agent is cut off and its work requeued."""
    if agent.revoked:
        raise AgentControlError("This agent is already revoked.")
    agent.revoked = True
    agent.draining = False
    audit.record(db, actor, "agent.revoke", agent.id, agent.name, farm.clock())
    await db.commit()
    farm.drained.discard(agent.id)
    conn = farm.agents.pop(agent.id, None)
    if conn is not None:
        conn.draining = True  # belt and braces: nothing more is planned for it
    # The agent cannot come back, so its jobs need not wait for the reconnect grace.
    for lease in [lease for lease in farm.leases.values() if lease.agent_id == agent.id]:
        await farm.lose(lease.job_id, lease.attempt, "its agent was revoked")
    if conn is not None:
        message = "this agent's token was revoked; enroll again"
        with contextlib.suppress(Exception):
            await conn.send(Error(code="revoked", message=message, fatal=True))
        with contextlib.suppress(Exception):
            await conn.close(CLOSE_REVOKED, message)
    farm.hub.publish("farm")


async def drain(farm: Farm, db: AsyncSession, agent: models.Agent, actor: models.User) -> None:
    """No new work for this agent (also after reconnects); it finishes what it holds."""
    if agent.revoked:
        raise AgentControlError("This agent is revoked; there is nothing to drain.")
    if agent.id in farm.drained:
        raise AgentControlError("This agent is already draining.")
    farm.drained.add(agent.id)
    agent.draining = True
    audit.record(db, actor, "agent.drain", agent.id, agent.name, farm.clock())
    await db.commit()
    conn = farm.agents.get(agent.id)
    if conn is not None and not conn.draining:
        conn.draining = True
        with contextlib.suppress(Exception):  # a dead socket is the lease reaper's business
            await conn.send(Drain(reason="drained by an administrator"))
    farm.hub.publish("farm")


async def resume(farm: Farm, db: AsyncSession, agent: models.Agent, actor: models.User) -> None:
    """Undo a drain: the connection is closed so that the agent reconnects ready for work."""
    if agent.id not in farm.drained:
        raise AgentControlError("This agent is not draining.")
    farm.drained.discard(agent.id)
    agent.draining = False
    audit.record(db, actor, "agent.resume", agent.id, agent.name, farm.clock())
    await db.commit()
    conn = farm.agents.get(agent.id)
    if conn is not None and conn.draining:
        with contextlib.suppress(Exception):
            await conn.close(CLOSE_RESUMED, "drain lifted by an administrator; reconnect")
    farm.hub.publish("farm")


async def disconnect(farm: Farm, db: AsyncSession, agent: models.Agent, actor: models.User) -> None:
    """Drop the connection; the agent may reconnect and reclaim its jobs within the grace."""
    conn = farm.agents.get(agent.id)
    if conn is None:
        raise AgentControlError("This agent is not connected.")
    audit.record(db, actor, "agent.disconnect", agent.id, agent.name, farm.clock())
    await db.commit()
    conn.draining = True  # no assignment may race the close
    with contextlib.suppress(Exception):
        await conn.close(CLOSE_KICKED, "disconnected by an administrator")
    farm.hub.publish("farm")


async def suspend_owner(farm: Farm, owner_id: int) -> int:
    """After a ban is committed: cut the user's agents off and requeue what they held.

    Returns how many connections were closed. Other users' jobs the agents
    held go back in line at once (the agents cannot come back to finish them).
    """
    farm.suspended_owners.add(owner_id)
    conns = [conn for conn in farm.agents.values() if conn.owner_id == owner_id]
    for conn in conns:
        conn.suspended = True  # before any await: no dispatch pass may pick it
        farm.agents.pop(conn.id, None)
    ids = {conn.id for conn in conns}
    for lease in [lease for lease in farm.leases.values() if lease.agent_id in ids]:
        await farm.lose(lease.job_id, lease.attempt, "its agent's owner was suspended")
    for conn in conns:
        with contextlib.suppress(Exception):
            await conn.send(Error(code="owner_suspended", message=SUSPENDED_MESSAGE, fatal=True))
        with contextlib.suppress(Exception):
            await conn.close(CLOSE_SUSPENDED, SUSPENDED_MESSAGE)
    farm.agents_changed()
    return len(conns)


def restore_owner(farm: Farm, owner_id: int) -> None:
    """After an unban: the user's agents may connect again (they retry by themselves)."""
    farm.suspended_owners.discard(owner_id)
    farm.agents_changed()


ACTIONS = {
    "approve": approve,
    "revoke": revoke,
    "drain": drain,
    "resume": resume,
    "disconnect": disconnect,
}
