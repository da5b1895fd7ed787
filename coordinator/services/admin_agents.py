"""Agent control shared by the admin console and the volunteer page.

Every action writes the database (with an audit entry) first, then acts on the
live connection, if any: approve lets a connected agent take work at once,
revoke disconnects it with ``CloseCode.BAD_TOKEN`` and requeues what it held, drain
stops new work while it finishes what it holds, disconnect drops the socket
and lets the lease machinery decide what happens to its jobs. Banning a user
suspends all of their agents (``suspend_owner``): cut off with ``CloseCode.NOT_ALLOWED``
and refused until the unban (``restore_owner``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.farm.engine import Farm
from coordinator.farm.live import AgentConn, AgentStatus, LiveProgress
from coordinator.i18n import gettext
from coordinator.services import audit
from coordinator.services.errors import ActionError
from coordinator.store import models
from protocol import CloseCode, Drain, Error
from scheduler.lifecycle import JobEvent, sources

SUSPENDED_MESSAGE = "owner_suspended: the account that owns this agent is suspended"


class AgentControlError(ActionError):
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
    now: float
    status: AgentStatus
    owner_banned: bool = False
    # Replica mode: connected to another replica, since then (its holder's clock).
    elsewhere: bool = False
    elsewhere_since: float | None = None

    @property
    def online(self) -> bool:
        return self.conn is not None or self.elsewhere

    @property
    def average_s(self) -> float | None:
        a = self.agent
        return a.gpu_seconds / a.jobs_done if a.jobs_done else None

    @property
    def uptime_s(self) -> float | None:
        if self.conn is not None:
            return self.now - self.conn.connected_at
        if self.elsewhere_since:
            return max(self.now - self.elsewhere_since, 0.0)
        return None

    @property
    def last_seen(self) -> float | None:
        return self.conn.last_seen if self.conn is not None else self.agent.last_seen_at


def _view(
    farm: Farm,
    agent: models.Agent,
    owner: str,
    banned: bool,
    held_elsewhere: dict[str, list[tuple[str, int]]],
) -> AgentView:
    conn = farm.agents.get(agent.id)
    elsewhere = farm.online_elsewhere(agent.id)
    holding = conn.session.held if conn else held_elsewhere.get(agent.id, ())
    held = tuple(
        HeldJob(job_id, attempt, farm.progress.get(job_id)) for job_id, attempt in sorted(holding)
    )
    found = farm.cluster.everywhere.get(agent.id) if elsewhere and farm.cluster else None
    return AgentView(
        agent, owner, conn, held, farm.clock(), farm.status_of(agent, banned), banned,
        elsewhere=elsewhere, elsewhere_since=found.connected_at if found else None,
    )  # fmt: skip


# An attempt an agent holds: the states a lease can be lost from (farm/lifecycle.py's "live").
_LIVE_ON_AGENT = sorted(state.value for state in sources(JobEvent.LOSE))


async def _held_elsewhere(
    farm: Farm, db: AsyncSession, agent_ids: list[str]
) -> dict[str, list[tuple[str, int]]]:
    """Replica mode: the live jobs of agents another replica holds, from their rows (the
    holder keeps the sessions)."""
    others = [agent_id for agent_id in agent_ids if farm.online_elsewhere(agent_id)]
    if not others:
        return {}
    rows = await db.execute(
        select(models.Job.agent_id, models.Job.id, models.Job.attempt).where(
            models.Job.agent_id.in_(others), models.Job.state.in_(_LIVE_ON_AGENT)
        )
    )
    held: dict[str, list[tuple[str, int]]] = {}
    for agent_id, job_id, attempt in rows:
        if agent_id is not None:
            held.setdefault(agent_id, []).append((job_id, attempt))
    return held


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
    rows = (await db.execute(query.order_by(models.Agent.created_at.desc(), models.Agent.id))).all()
    held = await _held_elsewhere(farm, db, [agent.id for agent, _, _ in rows])
    views = [_view(farm, agent, owner, banned, held) for agent, owner, banned in rows]
    return sorted(views, key=lambda v: not v.online)


async def get_agent(db: AsyncSession, agent_id: str) -> models.Agent | None:
    return await db.get(models.Agent, agent_id)


async def approve(farm: Farm, db: AsyncSession, agent: models.Agent, actor: models.User) -> None:
    if agent.revoked:
        raise AgentControlError(gettext("A revoked agent cannot be approved; enroll it again."))
    agent.approved = True
    audit.record(db, actor, "agent.approve", agent.id, agent.name, farm.clock())
    await db.commit()
    await _approve_here(farm, agent.id)
    farm.relay("agent", agent.id, "approve")


async def _approve_here(farm: Farm, agent_id: str) -> None:
    farm.approve_agent(agent_id)


async def revoke(farm: Farm, db: AsyncSession, agent: models.Agent, actor: models.User) -> None:
    """Refuse the token from now on; a connected agent is cut off and its work requeued."""
    if agent.revoked:
        raise AgentControlError(gettext("This agent is already revoked."))
    agent.revoked = True
    agent.draining = False
    audit.record(db, actor, "agent.revoke", agent.id, agent.name, farm.clock())
    await db.commit()
    await _revoke_here(farm, agent.id)
    farm.relay("agent", agent.id, "revoke")


async def _revoke_here(farm: Farm, agent_id: str) -> None:
    # The agent cannot come back, so its jobs need not wait for the reconnect grace.
    conn = await farm.revoke_agent(agent_id)
    if conn is not None:
        message = "this agent's token was revoked; enroll again"
        with contextlib.suppress(Exception):
            await conn.send(Error(code="revoked", message=message, fatal=True))
        with contextlib.suppress(Exception):
            await conn.close(CloseCode.BAD_TOKEN, message)


async def drain(farm: Farm, db: AsyncSession, agent: models.Agent, actor: models.User) -> None:
    """No new work for this agent (also after reconnects); it finishes what it holds."""
    if agent.revoked:
        raise AgentControlError(gettext("This agent is revoked; there is nothing to drain."))
    if farm.is_drained(agent.id):
        raise AgentControlError(gettext("This agent is already draining."))
    agent.draining = True
    audit.record(db, actor, "agent.drain", agent.id, agent.name, farm.clock())
    await db.commit()
    await _drain_here(farm, agent.id)
    farm.relay("agent", agent.id, "drain")


async def _drain_here(farm: Farm, agent_id: str) -> None:
    conn = farm.drain_agent(agent_id)
    if conn is not None:
        with contextlib.suppress(Exception):  # a dead socket is the lease reaper's business
            await conn.send(Drain(reason="drained by an administrator"))


async def resume(farm: Farm, db: AsyncSession, agent: models.Agent, actor: models.User) -> None:
    """Undo a drain: the connection is closed so that the agent reconnects ready for work."""
    if not farm.is_drained(agent.id):
        raise AgentControlError(gettext("This agent is not draining."))
    agent.draining = False
    audit.record(db, actor, "agent.resume", agent.id, agent.name, farm.clock())
    await db.commit()
    await _resume_here(farm, agent.id)
    farm.relay("agent", agent.id, "resume")


async def _resume_here(farm: Farm, agent_id: str) -> None:
    conn = farm.resume_agent(agent_id)
    if conn is not None:
        with contextlib.suppress(Exception):
            await conn.close(CloseCode.NORMAL, "drain lifted by an administrator; reconnect")


async def disconnect(farm: Farm, db: AsyncSession, agent: models.Agent, actor: models.User) -> None:
    """Drop the connection; the agent may reconnect and reclaim its jobs within the grace."""
    if not await farm.connected_anywhere(agent.id):
        raise AgentControlError(gettext("This agent is not connected."))
    audit.record(db, actor, "agent.disconnect", agent.id, agent.name, farm.clock())
    await db.commit()
    await _disconnect_here(farm, agent.id)
    farm.relay("agent", agent.id, "disconnect")


async def _disconnect_here(farm: Farm, agent_id: str) -> None:
    conn = farm.kick_agent(agent_id)  # no assignment may race the close
    if conn is not None:
        with contextlib.suppress(Exception):
            await conn.close(CloseCode.GOING_AWAY, "disconnected by an administrator")


async def suspend_owner(farm: Farm, owner_id: int) -> int:
    """After a ban is committed: cut the user's agents off and requeue what they held.

    Returns how many connections were closed. Other users' jobs the agents
    held go back in line at once (the agents cannot come back to finish them).
    """
    farm.relay("user", str(owner_id), "suspend")
    return await _suspend_here(farm, owner_id)


async def _suspend_here(farm: Farm, owner_id: int) -> int:
    conns = await farm.suspend_owner(owner_id)
    for conn in conns:
        with contextlib.suppress(Exception):
            await conn.send(Error(code="owner_suspended", message=SUSPENDED_MESSAGE, fatal=True))
        with contextlib.suppress(Exception):
            await conn.close(CloseCode.NOT_ALLOWED, SUSPENDED_MESSAGE)
    return len(conns)


def restore_owner(farm: Farm, owner_id: int) -> None:
    """After an unban: the user's agents may connect again (they retry by themselves)."""
    farm.restore_owner(owner_id)
    farm.relay("user", str(owner_id), "restore")


_HERE = {
    "approve": _approve_here,
    "revoke": _revoke_here,
    "drain": _drain_here,
    "resume": _resume_here,
    "disconnect": _disconnect_here,
}


async def apply_relayed(farm: Farm, kind: str, ident: str, action: str) -> None:
    """Replica mode: another replica committed an administrator's control; apply its live
    part here (this replica's connections and memory). Unknown controls are ignored."""
    if kind == "agent" and action in _HERE:
        await _HERE[action](farm, ident)
    elif kind == "user" and ident.isdigit():
        if action == "suspend":
            await _suspend_here(farm, int(ident))
        elif action == "restore":
            farm.restore_owner(int(ident))


ACTIONS = {
    "approve": approve,
    "revoke": revoke,
    "drain": drain,
    "resume": resume,
    "disconnect": disconnect,
}
