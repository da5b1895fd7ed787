"""Live state of the farm kept in memory: connected agents, job progress, usage.

Plain values the farm, the agent endpoint and the views share; nothing here
touches the database.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum

import scheduler
from protocol import (
    IMAGE_MODEL,
    Assign,
    Capabilities,
    CoordinatorMessage,
    CoordinatorSession,
    encode,
    image_frames,
)
from protocol.messages import IMAGE_JOBS_SINCE


def batch_key(model: str, steps: int, guidance: float, image: str | None = None) -> str:
    """Jobs with the same key can share one GPU pass. Image jobs share one only with
    jobs of the same input image (``image``: its sha256), so an ``assign`` carries one
    image at most."""
    key = f"{model}|{steps}|{guidance:.4g}"
    return f"{key}|{image}" if image else key


@dataclass
class DailyUsage:
    """Jobs a user submitted in the last day, kept in memory once read from the database.

    Deleting a job never gives quota back, so the count only falls as submissions
    age out of the window.
    """

    window_s: float
    entries: deque[tuple[float, int]] = field(default_factory=deque)
    total: int = 0

    def count(self, now: float) -> int:
        while self.entries and self.entries[0][0] < now - self.window_s:
            self.total -= self.entries.popleft()[1]
        return self.total

    def add(self, at: float, jobs: int) -> None:
        self.entries.append((at, jobs))
        self.total += jobs


@dataclass
class LiveProgress:
    stage: str = "queued"
    step: int = 0
    total: int = 0
    eta_s: float | None = None
    # For the measured generation time (the agent's own figure is not trusted):
    # when the assign went out, how many jobs shared that GPU pass, and when the
    # result header came back.
    assigned_at: float | None = None
    batch: int = 1
    reported_at: float | None = None

    def measured_s(self, now: float) -> float | None:
        """This job's share of the time its batch spent on the agent, if known."""
        if self.assigned_at is None:
            return None
        end = self.reported_at if self.reported_at is not None else now
        return max(0.0, end - self.assigned_at) / max(1, self.batch)


class AgentStatus(StrEnum):
    """What an enrolled agent is, for every page and metric (one definition)."""

    REVOKED = "revoked"
    OWNER_SUSPENDED = "owner suspended"
    PENDING = "pending"
    DRAINING = "draining"
    PAUSED = "paused"  # by its owner (Contribute page, agent CLI, working hours, GPU use)
    APPROVED = "approved"


def agent_status(
    *, revoked: bool, owner_suspended: bool, approved: bool, draining: bool, paused: bool = False
) -> AgentStatus:
    if revoked:
        return AgentStatus.REVOKED
    if owner_suspended:
        return AgentStatus.OWNER_SUSPENDED
    if not approved:
        return AgentStatus.PENDING
    if draining:
        return AgentStatus.DRAINING
    if paused:
        return AgentStatus.PAUSED
    return AgentStatus.APPROVED


@dataclass
class AgentConn:
    """A connected agent: its socket's send function and protocol state."""

    id: str
    owner_id: int
    name: str
    session: CoordinatorSession
    send_text: Callable[[str], Awaitable[None]]
    close: Callable[[int, str], Awaitable[None]]
    capabilities: Capabilities
    approved: bool
    version: str = ""
    connected_at: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.time)
    # Being cut off (disconnected, revoked, its owner suspended): no new work, ever.
    # Whether an admin drained the agent is the farm's fact (``Farm.drained``).
    closing: bool = False
    # The owner's controls as the agent last reported them (protocol v2 ``status``,
    # see coordinator/services/agentcontrols.py): a paused agent gets no new work.
    paused: bool = False
    pause_reason: str = ""
    status_max_batch: int | None = None
    prefer_own: bool = False
    prefer_users: tuple[str, ...] = ()
    preferred_users: frozenset[str] = frozenset()  # user ids, for the scheduler
    status_seen: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Binary frames to the agent: an image job's input image (protocol v3).
    send_bytes: Callable[[bytes], Awaitable[None]] | None = None

    async def send(self, message: CoordinatorMessage) -> None:
        async with self.lock:
            # The session adapts the message to the peer's protocol version.
            await self.send_text(encode(self.session.send(message)))

    async def send_assign(self, message: Assign, image: bytes | None) -> None:
        """Send an assign and, for image jobs, its input image's frames right after it
        (under the lock: nothing may come between them, see protocol.images)."""
        if message.image is None:
            await self.send(message)
            return
        if image is None or self.send_bytes is None:
            raise ValueError("an assign of image jobs needs the image and a binary channel")
        async with self.lock:
            self.session.send(message)
            await self.send_text(encode(message))
            for frame in image_frames(image):
                await self.send_bytes(frame)

    @property
    def models(self) -> frozenset[str]:
        """The models it advertised that it may be given jobs of: image jobs only over a
        connection that speaks protocol version 3 (an older agent could not read them)."""
        models = frozenset(self.capabilities.models)
        if not self.session.speaks(IMAGE_JOBS_SINCE):
            models -= {IMAGE_MODEL}
        return models

    @property
    def idle(self) -> bool:
        """Holds nothing and may be given work, as far as the connection knows (its
        owner has not paused it)."""
        return not self.session.held and self.approved and not self.closing and not self.paused

    def snapshot(self, free: bool) -> scheduler.Agent:
        return scheduler.Agent(
            id=self.id,
            free_slots=1 if free else 0,
            max_batch=min(self.capabilities.max_batch, self.status_max_batch or 64),
            max_steps=self.capabilities.max_steps,
            models=self.models,
            total_slots=1,
            preferred_users=self.preferred_users,
        )
