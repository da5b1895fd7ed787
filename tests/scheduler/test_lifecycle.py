from __future__ import annotations

import pytest

from scheduler.lifecycle import (
    TRANSITIONS,
    IllegalTransitionError,
    JobEvent,
    JobState,
    sources,
    target,
    transition,
)


def test_lifecycle_sources_and_targets_come_from_the_table() -> None:
    assert sources(JobEvent.ASSIGN) == {JobState.QUEUED}
    assert sources(JobEvent.START) == {JobState.ASSIGNED}  # running -> running is no move
    assert sources(JobEvent.LOSE) == {JobState.ASSIGNED, JobState.RUNNING}
    assert sources(JobEvent.CANCEL) == {JobState.QUEUED, JobState.ASSIGNED, JobState.RUNNING}
    assert sources(JobEvent.REQUEUE) == {JobState.FAILED, JobState.CANCELLED}
    assert target(JobEvent.LOSE) == JobState.QUEUED
    assert target(JobEvent.FAIL) == JobState.FAILED


@pytest.mark.parametrize("event", list(JobEvent))
def test_lifecycle_every_event_has_one_target_and_its_sources_lead_there(event: JobEvent) -> None:
    for state in sources(event):
        assert transition(state, event) == target(event)
    assert all(TRANSITIONS[s, e] == target(event) for (s, e) in TRANSITIONS if e == event)


def test_lifecycle_terminal_states_accept_only_requeue() -> None:
    for state in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED):
        for event in JobEvent:
            if event is not JobEvent.REQUEUE:
                with pytest.raises(IllegalTransitionError, match=event.value):
                    transition(state, event)
