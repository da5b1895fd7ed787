"""Replica mode: the replica registry, which replica holds which agent, the leader's epoch."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from coordinator.store.models.base import Base


class Replica(Base):
    """A coordinator process sharing this PostgreSQL database (replica mode); one whose
    heartbeat stops is reaped by the first other replica that notices."""

    __tablename__ = "replicas"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    started_at: Mapped[float] = mapped_column(Float)
    heartbeat_at: Mapped[float] = mapped_column(Float, index=True)


class AgentPresence(Base):
    """The replica that holds an agent's socket (and its leases), with what the leader
    plans with. ``connected`` false: the socket is gone but the replica still holds the
    agent's leases (its reconnect grace); the row goes when they end."""

    __tablename__ = "agent_presence"

    agent_id: Mapped[str] = mapped_column(
        ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True
    )
    replica_id: Mapped[str] = mapped_column(String(32), index=True)
    connected: Mapped[bool] = mapped_column(Boolean)
    approved: Mapped[bool] = mapped_column(Boolean)
    # Approved, not paused by its owner, not being cut off (drains are agents.draining).
    available: Mapped[bool] = mapped_column(Boolean)
    models: Mapped[str] = mapped_column(Text)  # JSON list of model names
    max_batch: Mapped[int] = mapped_column(Integer)
    max_steps: Mapped[int] = mapped_column(Integer)
    preferred_users: Mapped[str] = mapped_column(Text)  # JSON list of user ids
    # When the holder took the agent's connection (admin pages on the other replicas).
    connected_at: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    updated_at: Mapped[float] = mapped_column(Float)


class ReplicaLeadership(Base):
    """One row: the fencing epoch of the dispatching leader. A new leader raises it; a
    claim checks it under a row lock, so a deposed leader's late claim fails, and stores
    the fair-share state with the claim."""

    __tablename__ = "replica_leadership"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    epoch: Mapped[int] = mapped_column(BigInteger)
    replica_id: Mapped[str] = mapped_column(String(32))
    since: Mapped[float] = mapped_column(Float)
    # The scheduler's FairState after the last claim (JSON): a new leader goes on from it.
    fair_state: Mapped[str | None] = mapped_column(Text, default=None)
