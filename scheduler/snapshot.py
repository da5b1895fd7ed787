"""Immutable values the coordinator hands to the scheduler and gets back.

Everything here is plain data: the coordinator builds a :class:`Snapshot` from
its database, calls :func:`scheduler.plan`, and stores the returned
:class:`FairState` for the next call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from scheduler.tiers import Tier

if TYPE_CHECKING:
    from scheduler.queue import QueueIndex

DEFAULT_MODEL = "shap-e"


@dataclass(frozen=True, slots=True)
class Job:
    """A queued job. ``priority`` > 0 is an admin bump: it runs before fair share.

    ``excluded_agents`` declined the job (their owner's content list refuses
    it): it is never planned on them.
    """

    id: str
    user_id: str
    enqueued_at: float
    batch_key: str
    steps: int
    model: str = DEFAULT_MODEL
    attempt: int = 0
    priority: int = 0
    excluded_agents: frozenset[str] = frozenset()

    @property
    def needs(self) -> tuple[str, int, frozenset[str]]:
        """Everything that decides which agents can run it (a cache key)."""
        return (self.model, self.steps, self.excluded_agents)


def order_key(job: Job) -> tuple[int, float, str]:
    """The total order inside one user's queue: bump first, then age, then id."""
    return (-job.priority, job.enqueued_at, job.id)


@dataclass(frozen=True, slots=True)
class User:
    """A job owner. ``tier`` should already be the effective tier (see ``effective_tier``)."""

    id: str
    tier: str
    running: int = 0
    credit: float = 0.0


@dataclass(frozen=True, slots=True)
class Agent:
    """A connected agent. ``total_slots`` (0 = unknown) only sharpens ETA estimates.

    ``preferred_users``: its owner asked for these users' jobs first ("my own
    jobs first"); see ``Dispatch._preferred``.
    """

    id: str
    free_slots: int
    max_batch: int
    max_steps: int
    models: frozenset[str]
    total_slots: int = 0
    preferred_users: frozenset[str] = frozenset()

    def can_run(self, job: Job) -> bool:
        return (
            job.model in self.models
            and job.steps <= self.max_steps
            and self.id not in job.excluded_agents
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Queued jobs (only ``queued`` ones), job owners, connected agents, tiers.

    ``jobs`` is a plain list, or a :class:`~scheduler.queue.QueueIndex` kept up to
    date by its owner: then a pass reads each user's line as it stands instead of
    sorting the whole queue again (same decisions either way).
    """

    jobs: Sequence[Job] | QueueIndex
    users: Mapping[str, User]
    agents: Sequence[Agent]
    tiers: Mapping[str, Tier]


@dataclass(frozen=True, slots=True)
class Assignment:
    """One batch of jobs with identical ``batch_key`` for one slot of one agent."""

    agent_id: str
    job_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FairState:
    """Virtual-time bookkeeping carried between :func:`plan` calls.

    ``vtime`` is the global virtual time of the tier scheduler; ``tier_pass``
    the stride pass of each tier; ``user_vtime`` the virtual time of the user
    scheduler inside each tier and ``user_pass`` each (tier, user) pass. Only
    entries ahead of their virtual time are kept: the rest would be clamped up
    to it anyway, so the state stays as small as the set of recently served
    users. ``FairState()`` is a fresh start.
    """

    vtime: float = 0.0
    tier_pass: tuple[tuple[str, float], ...] = ()
    user_vtime: tuple[tuple[str, float], ...] = ()
    user_pass: tuple[tuple[str, str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Plan:
    assignments: tuple[Assignment, ...]
    state: FairState

    @property
    def job_ids(self) -> tuple[str, ...]:
        return tuple(j for a in self.assignments for j in a.job_ids)


@dataclass(frozen=True, slots=True)
class QueueEstimate:
    """1-based place in the dispatch order; ``eta_s`` is None if no agent can run it."""

    position: int
    eta_s: float | None
