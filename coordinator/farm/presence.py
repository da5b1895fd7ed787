"""Replica mode's tables: the replicas' heartbeats, which replica holds which agent, the
leader's fencing epoch, and the reaping of a replica that stopped.

Every function is a unit of work for the ``Writer`` (a synchronous ``Connection``
inside its transaction). Job states still change only through ``lifecycle``; the
conditional updates here make every step idempotent, so any number of replicas may
run them at once (see "Replicas" in docs/architecture.md).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, cast

import msgspec
from sqlalchemy import Connection, Table, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

import scheduler
from coordinator.farm import lifecycle
from coordinator.store import models
from protocol import JobSpec
from scheduler.lifecycle import JobState

_REPLICAS = cast(Table, models.Replica.__table__)
_PRESENCE = cast(Table, models.AgentPresence.__table__)
_LEADER = cast(Table, models.ReplicaLeadership.__table__)
_JOBS = cast(Table, models.Job.__table__)
_AGENTS = cast(Table, models.Agent.__table__)
_USERS = cast(Table, models.User.__table__)
log = logging.getLogger(__name__)
LIVE = (JobState.ASSIGNED.value, JobState.RUNNING.value)


class DeposedError(RuntimeError):
    """Another replica became the leader: this one's claims are refused."""


@dataclass(frozen=True)
class Presence:
    """What the leader plans with for one agent, as its holder last wrote it."""

    agent_id: str
    connected: bool
    approved: bool
    available: bool
    models: frozenset[str]
    max_batch: int
    max_steps: int
    preferred_users: frozenset[str]
    connected_at: float = 0.0  # when its holder took the connection (for the admin pages)


@dataclass(frozen=True)
class Lost:
    """A job whose attempt was given up (``state``: queued again, or failed)."""

    job_id: str
    user_id: int
    state: str


# -- the registry ---------------------------------------------------------------


def join(db: Connection, replica: str, now: float) -> None:
    db.execute(insert(_REPLICAS).values(id=replica, started_at=now, heartbeat_at=now))


def beat(db: Connection, replica: str, now: float) -> bool:
    """The replica is alive; False if it had been reaped meanwhile (it rejoins)."""
    done = db.execute(update(_REPLICAS).where(_REPLICAS.c.id == replica).values(heartbeat_at=now))
    if done.rowcount:
        return True
    join(db, replica, now)
    return False


def leave(db: Connection, replica: str) -> None:
    """A clean stop: the replica's agents' jobs go the way a reaped replica's go."""
    db.execute(delete(_REPLICAS).where(_REPLICAS.c.id == replica))


def _lose_all(db: Connection, jobs: list[tuple[str, int, int]], why: str, now: float,
              max_attempts: int) -> list[Lost]:  # fmt: skip
    lost: list[Lost] = []
    for job_id, attempt, user_id in jobs:
        job = lifecycle.lose(db, job_id, attempt, why, now, max_attempts)
        if job is not None:
            lost.append(Lost(job_id, user_id, job.state))
    return lost


def reap(db: Connection, dead_before: float, now: float, max_attempts: int) -> list[Lost]:
    """Remove the replicas whose heartbeat is older than ``dead_before``, the agents they
    held, and requeue (or fail) the jobs those agents held. A replica is reaped by the
    one transaction whose conditional delete matched it."""
    gone = list(
        db.scalars(
            delete(_REPLICAS)
            .where(_REPLICAS.c.heartbeat_at < dead_before)
            .returning(_REPLICAS.c.id)
        )
    )
    if not gone:
        return []
    log.warning("reaped coordinator replica(s) %s: their heartbeats stopped", ", ".join(gone))
    agents = list(
        db.scalars(
            delete(_PRESENCE)
            .where(_PRESENCE.c.replica_id.in_(gone))
            .returning(_PRESENCE.c.agent_id)
        )
    )
    if not agents:
        return []
    jobs = db.execute(
        select(_JOBS.c.id, _JOBS.c.attempt, _JOBS.c.user_id)
        .where(_JOBS.c.agent_id.in_(agents), _JOBS.c.state.in_(LIVE))
        .with_for_update()
    )
    rows = [(j, a, u) for j, a, u in jobs]
    return _lose_all(db, rows, "its coordinator replica stopped", now, max_attempts)


def reap_orphans(db: Connection, now: float, max_attempts: int) -> list[Lost]:
    """Live jobs whose agent no replica holds (a holder died between a claim and its
    presence row, or before the replica mode was switched on): requeue them."""
    held = select(_PRESENCE.c.agent_id)
    jobs = db.execute(
        select(_JOBS.c.id, _JOBS.c.attempt, _JOBS.c.user_id).where(
            _JOBS.c.state.in_(LIVE),
            (_JOBS.c.agent_id.is_(None)) | (_JOBS.c.agent_id.not_in(held)),
        )
    )
    rows = [(j, a, u) for j, a, u in jobs]
    return _lose_all(db, rows, "no coordinator replica holds its agent", now, max_attempts)


# -- presence -------------------------------------------------------------------


def hold(db: Connection, replica: str, presence: Presence, now: float) -> None:
    """This replica holds the agent (upsert: a reconnect elsewhere moves the row)."""
    values = {
        "agent_id": presence.agent_id,
        "replica_id": replica,
        "connected": presence.connected,
        "approved": presence.approved,
        "available": presence.available,
        "models": json.dumps(sorted(presence.models)),
        "max_batch": presence.max_batch,
        "max_steps": presence.max_steps,
        "preferred_users": json.dumps(sorted(presence.preferred_users)),
        "connected_at": presence.connected_at,
        "updated_at": now,
    }
    statement = pg_insert(_PRESENCE).values(**values)
    changes = {k: statement.excluded[k] for k in values if k != "agent_id"}
    db.execute(statement.on_conflict_do_update(index_elements=["agent_id"], set_=changes))


def release(db: Connection, replica: str, agent_id: str) -> None:
    """The replica no longer holds the agent (if it still did)."""
    db.execute(
        delete(_PRESENCE).where(_PRESENCE.c.agent_id == agent_id, _PRESENCE.c.replica_id == replica)
    )


def holder(db: Connection, agent_id: str) -> str | None:
    """The replica holding the agent's socket (None: not connected anywhere)."""
    found: str | None = db.scalar(
        select(_PRESENCE.c.replica_id).where(
            _PRESENCE.c.agent_id == agent_id, _PRESENCE.c.connected
        )
    )
    return found


def disconnect_all(db: Connection, replica: str) -> None:
    """The replica stops: its sockets close, so no leader may plan for its agents; their
    rows (and leases) stay until they reconnect elsewhere or the replica is reaped."""
    db.execute(
        update(_PRESENCE)
        .where(_PRESENCE.c.replica_id == replica)
        .values(connected=False, available=False)
    )


def live_jobs(db: Connection, agent_id: str) -> list[tuple[str, int, int]]:
    """(job id, attempt, owner) of the jobs the database says the agent holds."""
    rows = db.execute(
        select(_JOBS.c.id, _JOBS.c.attempt, _JOBS.c.user_id).where(
            _JOBS.c.agent_id == agent_id, _JOBS.c.state.in_(LIVE)
        )
    )
    return [(j, a, u) for j, a, u in rows]


def with_claims(db: Connection, agent_ids: list[str]) -> set[str]:
    """Which of these agents have jobs claimed for them and not started (to send)."""
    if not agent_ids:
        return set()
    rows = db.scalars(
        select(_JOBS.c.agent_id)
        .where(_JOBS.c.agent_id.in_(agent_ids), _JOBS.c.state == JobState.ASSIGNED.value)
        .distinct()
    )
    return {agent_id for agent_id in rows if agent_id is not None}


# -- the leader -----------------------------------------------------------------


def lead(db: Connection, replica: str, now: float) -> tuple[int, scheduler.FairState]:
    """This replica just took the advisory lock: raise the fencing epoch (returned, with
    the fair-share state the last claim stored)."""
    row = db.execute(
        select(_LEADER.c.epoch, _LEADER.c.fair_state).where(_LEADER.c.id == 1).with_for_update()
    ).first()
    epoch = (row[0] if row else 0) + 1
    if row is None:
        db.execute(insert(_LEADER).values(id=1, epoch=epoch, replica_id=replica, since=now))
    else:
        db.execute(
            update(_LEADER)
            .where(_LEADER.c.id == 1)
            .values(epoch=epoch, replica_id=replica, since=now)
        )
    return epoch, _fair_of(row[1] if row else None)


def _fair_of(saved: str | None) -> scheduler.FairState:
    if not saved:
        return scheduler.FairState()
    try:
        return msgspec.json.decode(saved, type=scheduler.FairState)
    except msgspec.MsgspecError:
        log.warning("the stored fair-share state does not decode; starting afresh")
        return scheduler.FairState()


def fenced_claim(
    db: Connection,
    epoch: int,
    batches: list[tuple[str, tuple[str, ...]]],
    fair: scheduler.FairState | None = None,
) -> list[list[JobSpec]]:
    """``lifecycle.claim`` for each (agent, jobs) while ``epoch`` is still the leader's,
    storing ``fair`` (the plan's fair-share state) with the claims; DeposedError (nothing
    claimed) once a newer leader took over."""
    current = db.scalar(select(_LEADER.c.epoch).where(_LEADER.c.id == 1).with_for_update())
    if current != epoch:
        raise DeposedError(f"leader epoch {epoch} was superseded by {current}")
    if fair is not None:
        saved = msgspec.json.encode(fair).decode()
        db.execute(update(_LEADER).where(_LEADER.c.id == 1).values(fair_state=saved))
    return [lifecycle.claim(db, agent_id, job_ids) for agent_id, job_ids in batches]


def _presence(row: Any) -> Presence:
    return Presence(
        row.agent_id, row.connected, row.approved, row.available,
        frozenset(json.loads(row.models)), row.max_batch, row.max_steps,
        frozenset(json.loads(row.preferred_users)), row.connected_at,
    )  # fmt: skip


def connected(db: Connection, agent_id: str | None = None) -> dict[str, Presence]:
    """The connected agents (or only ``agent_id``), whichever replica holds them."""
    query = select(_PRESENCE).where(_PRESENCE.c.connected)
    if agent_id is not None:
        query = query.where(_PRESENCE.c.agent_id == agent_id)
    return {row.agent_id: _presence(row) for row in db.execute(query)}


def free_agents(db: Connection, alive_since: float = 0.0) -> list[scheduler.Agent]:
    """Agents some replica holds that may take work now: connected, available, not
    drained or revoked, their owner not suspended, holding no live job, and held by a
    replica whose heartbeat is newer than ``alive_since`` (not one that just died)."""
    busy = select(_JOBS.c.agent_id).where(_JOBS.c.state.in_(LIVE), _JOBS.c.agent_id.is_not(None))
    rows = db.execute(
        select(_PRESENCE)
        .join(_AGENTS, _AGENTS.c.id == _PRESENCE.c.agent_id)
        .join(_USERS, _USERS.c.id == _AGENTS.c.owner_id)
        .join(_REPLICAS, _REPLICAS.c.id == _PRESENCE.c.replica_id)
        .where(
            _REPLICAS.c.heartbeat_at > alive_since,
            _PRESENCE.c.connected,
            _PRESENCE.c.available,
            _AGENTS.c.approved,
            ~_AGENTS.c.draining,
            ~_AGENTS.c.revoked,
            ~_USERS.c.banned,
            _PRESENCE.c.agent_id.not_in(busy),
        )
    )
    return [
        scheduler.Agent(
            id=row.agent_id,
            free_slots=1,
            max_batch=row.max_batch,
            max_steps=row.max_steps,
            models=frozenset(json.loads(row.models)),
            total_slots=1,
            preferred_users=frozenset(json.loads(row.preferred_users)),
        )
        for row in rows
    ]


def running_counts(db: Connection) -> dict[str, int]:
    """Live jobs per user id, over every replica's agents."""
    rows = db.execute(
        select(_JOBS.c.user_id, func.count())
        .where(_JOBS.c.state.in_(LIVE))
        .group_by(_JOBS.c.user_id)
    )
    return {str(user): int(count) for user, count in rows}


def queued_row(db: Connection, job_id: str) -> models.Job | None:
    """A job as the queue index needs it, if it is queued."""
    row = db.execute(
        select(*_JOBS.c).where(_JOBS.c.id == job_id, _JOBS.c.state == JobState.QUEUED.value)
    ).first()
    return models.Job(**row._asdict()) if row is not None else None
