"""The job lifecycle as an explicit transition table.

    queued ──assign──▶ assigned ──accepted/progress──▶ running ──result──▶ succeeded
      ▲                   │                               │
      └──── lost (lease expired / agent gone / retryable failure) ─┘──▶ failed (attempts spent)
    queued | assigned | running ──cancel──▶ cancelled

The coordinator applies events through :func:`transition`; anything not in the
table is a bug or a hostile peer and raises :class:`IllegalTransitionError`.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    QUEUED = "queued"
    ASSIGNED = "assigned"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


class JobEvent(StrEnum):
    ASSIGN = "assign"
    START = "start"  # the agent accepted the job or reported progress
    SUCCEED = "succeed"
    LOSE = "lose"  # lease expired, agent vanished, retryable failure: back to the queue
    FAIL = "fail"  # permanent failure or attempts exhausted
    CANCEL = "cancel"
    REQUEUE = "requeue"  # admin action on a finished-unsuccessfully job


TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})

TRANSITIONS: dict[tuple[JobState, JobEvent], JobState] = {
    (JobState.QUEUED, JobEvent.ASSIGN): JobState.ASSIGNED,
    (JobState.QUEUED, JobEvent.CANCEL): JobState.CANCELLED,
    (JobState.QUEUED, JobEvent.FAIL): JobState.FAILED,
    (JobState.ASSIGNED, JobEvent.START): JobState.RUNNING,
    (JobState.ASSIGNED, JobEvent.SUCCEED): JobState.SUCCEEDED,
    (JobState.ASSIGNED, JobEvent.LOSE): JobState.QUEUED,
    (JobState.ASSIGNED, JobEvent.FAIL): JobState.FAILED,
    (JobState.ASSIGNED, JobEvent.CANCEL): JobState.CANCELLED,
    (JobState.RUNNING, JobEvent.START): JobState.RUNNING,
    (JobState.RUNNING, JobEvent.SUCCEED): JobState.SUCCEEDED,
    (JobState.RUNNING, JobEvent.LOSE): JobState.QUEUED,
    (JobState.RUNNING, JobEvent.FAIL): JobState.FAILED,
    (JobState.RUNNING, JobEvent.CANCEL): JobState.CANCELLED,
    (JobState.FAILED, JobEvent.REQUEUE): JobState.QUEUED,
    (JobState.CANCELLED, JobEvent.REQUEUE): JobState.QUEUED,
}


class IllegalTransitionError(Exception):
    def __init__(self, state: JobState, event: JobEvent) -> None:
        super().__init__(f"a {state.value} job cannot '{event.value}'")
        self.state = state
        self.event = event


def transition(state: JobState, event: JobEvent) -> JobState:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransitionError(state, event) from None


def can(state: JobState, event: JobEvent) -> bool:
    return (state, event) in TRANSITIONS


def sources(event: JobEvent) -> frozenset[JobState]:
    """The states ``event`` moves a job out of (a self-loop such as running → running
    is no move), read from the table: what a conditional UPDATE may match."""
    return frozenset(s for (s, e), t in TRANSITIONS.items() if e == event and s != t)


def target(event: JobEvent) -> JobState:
    """The one state ``event`` leads to (every event of the table has exactly one)."""
    (state,) = {t for (_, e), t in TRANSITIONS.items() if e == event}
    return state
