"""The volunteer owner's controls over their agent (protocol version 2).

The agent keeps the owner's decisions (pause, working hours, yielding to
other GPU work, the content blocklist, "my own jobs first") and reports them
with ``status``; this module applies a report to the live connection, gives
back jobs an agent ``declined`` without spending one of their tries, and sends
the Contribute page's pause and resume buttons to the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import cast

from sqlalchemy import Connection, Table, select
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.farm import declines, lifecycle
from coordinator.farm.engine import Farm
from coordinator.farm.live import AgentConn
from coordinator.services import audit
from coordinator.services.admin_agents import AgentControlError
from coordinator.store import models
from protocol import Declined, Pause, Resume, Status

PAGE_PAUSE_REASON = "paused from the Contribute page"
# Declines of one job that spend none of its tries; past this a misbehaving agent
# cannot keep a job bouncing forever: further declines count like lost attempts.
MAX_FREE_DECLINES = 10
STATUS_WAIT_S = 2.0  # how long a button waits for the agent's answering status
_JOBS = cast(Table, models.Job.__table__)

DECLINE_WHY = {
    "blocked": "an agent's owner does not run this kind of prompt; waiting for another agent",
    "paused": "its agent was paused; back in line",
}


async def handle(farm: Farm, conn: AgentConn, message: Status | Declined) -> None:
    """Apply an agent's ``status`` or ``declined`` (called by the agent endpoint)."""
    if isinstance(message, Status):
        await _apply_status(farm, conn, message)
    else:
        await _decline(farm, conn, message)


async def _apply_status(farm: Farm, conn: AgentConn, status: Status) -> None:
    # Only look user names up when they change: an agent may send many statuses.
    if status.prefer_own != conn.prefer_own or status.prefer_users != conn.prefer_users:
        preferred: set[str] = {str(conn.owner_id)} if status.prefer_own else set()
        if status.prefer_users:
            async with farm.sessions() as db:
                ids = await db.scalars(
                    select(models.User.id).where(models.User.username.in_(status.prefer_users))
                )
                preferred.update(str(user_id) for user_id in ids)
        conn.preferred_users = frozenset(preferred)
    before = (conn.paused, conn.pause_reason, conn.status_max_batch, conn.preferred_users)
    conn.paused = status.paused
    conn.pause_reason = status.reason
    conn.status_max_batch = status.max_batch
    conn.prefer_own = status.prefer_own
    conn.prefer_users = status.prefer_users
    conn.status_seen.set()
    if before != (conn.paused, conn.pause_reason, conn.status_max_batch, conn.preferred_users):
        farm.agents_changed()


async def _decline(farm: Farm, conn: AgentConn, message: Declined) -> None:
    if not conn.session.is_held(message.job, message.attempt):
        return  # a job already taken back: nothing to give back
    conn.session.release(message.job, message.attempt)
    if message.reason != "blocked":
        conn.paused = True  # it said so before its status arrived
    free = farm.decline(
        message.job, conn.id, blocked=message.reason == "blocked", max_free=MAX_FREE_DECLINES
    )
    blocked, job_id, attempt, agent_id = (
        message.reason == "blocked",
        message.job,
        message.attempt,
        conn.id,
    )

    def remember(db: Connection) -> None:
        if blocked:  # kept across restarts and replicas (farm/declines.py)
            declines.record(db, job_id, agent_id)
        if free:
            lifecycle.refund_try(db, job_id, attempt)

    await farm.writer.run(remember)
    await farm.lose(message.job, message.attempt, DECLINE_WHY[message.reason])


async def _controllable(farm: Farm, agent: models.Agent) -> AgentConn | None:
    """The agent's connection here; None if (replica mode) another replica holds it."""
    if agent.revoked:
        raise AgentControlError("This agent is revoked.")
    conn = farm.agents.get(agent.id)
    if conn is None:
        if await farm.connected_anywhere(agent.id):
            return None
        raise AgentControlError(
            "This agent is offline. Start it, or pause it on its machine with "
            "'shapefarm-agent pause'."
        )
    _check_version(conn)
    return conn


def _check_version(conn: AgentConn) -> None:
    if not conn.session.speaks(2):
        raise AgentControlError(
            "This agent runs an older version that cannot be paused from here; "
            "update it (or stop it on its machine)."
        )


async def _answered(conn: AgentConn) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(STATUS_WAIT_S):
            await conn.status_seen.wait()


async def pause(
    farm: Farm, db: AsyncSession, agent: models.Agent, actor: models.User, *, cancel: bool
) -> None:
    """Stop assigning to the agent now and tell it; ``cancel`` also drops its running batch."""
    conn = await _controllable(farm, agent)
    detail = "cancel the running batch" if cancel else "finish the running batch"
    audit.record(db, actor, "agent.pause", agent.id, detail, farm.clock())
    await db.commit()
    if conn is None:  # its replica tells it (replica mode)
        farm.relay("agent", agent.id, "pause-cancel" if cancel else "pause")
        return
    await _pause_here(farm, conn, cancel)
    await _answered(conn)


async def _pause_here(farm: Farm, conn: AgentConn, cancel: bool) -> None:
    conn.paused, conn.pause_reason = True, PAGE_PAUSE_REASON  # before any await: no race
    conn.status_seen.clear()
    with contextlib.suppress(Exception):  # a dead socket: it is paused here anyway
        await conn.send(Pause(cancel=cancel, reason=PAGE_PAUSE_REASON))
    farm.agents_changed()


async def resume(farm: Farm, db: AsyncSession, agent: models.Agent, actor: models.User) -> None:
    """End the owner's pause; the agent's own report says whether it runs (working hours…)."""
    conn = await _controllable(farm, agent)
    audit.record(db, actor, "agent.resume_work", agent.id, agent.name, farm.clock())
    await db.commit()
    if conn is None:
        farm.relay("agent", agent.id, "resume-work")
        return
    await _resume_here(conn)
    await _answered(conn)
    farm.agents_changed()


async def _resume_here(conn: AgentConn) -> None:
    conn.status_seen.clear()
    with contextlib.suppress(Exception):
        await conn.send(Resume(reason="resumed from the Contribute page"))


async def apply_relayed(farm: Farm, kind: str, agent_id: str, action: str) -> None:
    """Replica mode: the owner paused or resumed the agent on another replica; tell it
    if its socket is here (its answering status updates what the leader plans with)."""
    conn = farm.agents.get(agent_id) if kind == "agent" else None
    if conn is None or action not in ("pause", "pause-cancel", "resume-work"):
        return
    with contextlib.suppress(AgentControlError):
        _check_version(conn)
        if action == "resume-work":
            await _resume_here(conn)
        else:
            await _pause_here(farm, conn, action == "pause-cancel")
