"""The queue index, and the planner reading it: exactly the full-snapshot planner's decisions."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler import FairState, Job, Snapshot, User, plan, queue_positions
from scheduler.estimate import estimate_queue
from scheduler.queue import QueueIndex
from tests.support import reference_planner as reference
from tests.support.scheduling import MODELS, TIERS, agent, job

USERS = {
    "u0": User("u0", "free"),
    "u1": User("u1", "plus", running=1),
    "u2": User("u2", "pro", credit=500.0),
    "u3": User("u3", "free", credit=50.0),
}  # and "u4", who is unknown: its jobs are never planned


def test_index_keeps_each_users_line_in_dispatch_order() -> None:
    index = QueueIndex()
    for j in [job("c", "a", 2.0), job("a", "a", 2.0), job("b", "a", 1.0), job("x", "b", 0.0)]:
        index.add(j)
    index.add(job("d", "a", 9.0, priority=1))
    assert [j.id for j in index.lines["a"].jobs] == ["d", "b", "a", "c"]
    assert [j.id for j in index.bumped()] == ["d"]
    assert index.count("a") == 4 and index.count("b") == 1 and index.count("nobody") == 0
    index.add(dataclasses.replace(index["d"], priority=0))  # un-bumped: back by age
    assert [j.id for j in index.lines["a"].jobs] == ["b", "a", "c", "d"]
    assert list(index.bumped()) == []
    assert index.discard("x") is not None and index.discard("x") is None
    assert "b" not in index.lines and len(index) == 4 and set(index) == {"a", "b", "c", "d"}
    for job_id in ["a", "b", "c", "d"]:
        index.discard(job_id)
    assert not index.lines and not index.lines.get("a")


def test_same_needs_run_stops_at_the_first_job_of_other_needs() -> None:
    index = QueueIndex(
        [job(f"b{i}", "u", float(i), steps=128) for i in range(10)]
        + [job("p", "u", 4.5, steps=16), job("q", "u", 20.0, steps=16)]
    )
    line = index.lines["u"]
    assert line.same_needs_run(0) == 5  # b0..b4, then p
    assert line.same_needs_run(5) == 1  # p alone
    assert line.same_needs_run(6) == 5  # b5..b9, then q
    assert line.same_needs_run(11) == 1


@st.composite
def new_job(draw: st.DrawFn, n: int) -> Job:
    return Job(
        f"j{n}",
        draw(st.sampled_from(["u0", "u0", "u1", "u2", "u3", "u4"])),
        enqueued_at=float(draw(st.integers(0, 40)) * 50),  # ties, and aged or not
        batch_key=draw(st.sampled_from("ab")),
        steps=draw(st.sampled_from([16, 64, 128, 128, 300])),
        model=draw(st.sampled_from(MODELS)),
        attempt=draw(st.integers(0, 1)),
        priority=draw(st.sampled_from([0, 0, 0, 0, 0, 1, 2, -1])),
        excluded_agents=frozenset(draw(st.sets(st.sampled_from(["a0", "a1"]), max_size=1))),
    )


def agents_strategy() -> st.SearchStrategy[list[object]]:
    one = st.builds(
        agent,
        st.sampled_from(["a0", "a1", "a2"]),
        free_slots=st.integers(0, 3),
        max_batch=st.integers(1, 3),
        max_steps=st.sampled_from([32, 64, 256]),
        models=st.sets(st.sampled_from(MODELS), min_size=1),
        total_slots=st.integers(0, 4),
    )
    return st.lists(one, max_size=3, unique_by=lambda a: a.id)  # type: ignore[no-any-return]


def _same_estimates(snap: Snapshot, listed: Snapshot, now: float, state: FairState) -> None:
    expected = reference.queue_positions(listed, now, state, 30.0)
    assert queue_positions(snap, now, state, 30.0) == expected
    lazy = estimate_queue(snap, now, state, 30.0)
    assert len(lazy) == len(expected)
    assert {job_id: lazy.get(job_id) for job_id in snap.jobs} == {
        job_id: expected.get(job_id) for job_id in snap.jobs
    }
    assert dict(lazy) == expected


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_planner_on_the_index_decides_like_the_full_snapshot_planner(data: st.DataObject) -> None:
    """Random submissions, cancels, bumps, agent changes and passes (state carried)."""
    index = QueueIndex()
    state, ref_state = FairState(), FairState()
    agents = data.draw(agents_strategy())
    now, made = 0.0, 0
    for _ in range(data.draw(st.integers(1, 40))):
        op = data.draw(
            st.sampled_from(["add", "add", "add", "backlog", "drop", "bump", "agents", "plan"])
        )
        if op == "add":
            index.add(data.draw(new_job(made)))
            made += 1
        elif op == "backlog":  # a run of jobs with one need, as a big request makes
            template = data.draw(new_job(made))
            for i in range(data.draw(st.integers(2, 30))):
                index.add(
                    dataclasses.replace(
                        template, id=f"j{made}", enqueued_at=template.enqueued_at + i
                    )
                )
                made += 1
        elif op == "drop" and index:
            index.discard(data.draw(st.sampled_from(sorted(index))))
        elif op == "bump" and index:
            target = index[data.draw(st.sampled_from(sorted(index)))]
            index.add(dataclasses.replace(target, priority=data.draw(st.integers(-1, 3))))
        elif op == "agents":
            agents = data.draw(agents_strategy())
        elif op == "plan":
            now += data.draw(st.sampled_from([0.0, 10.0, 700.0, 3000.0]))
            snap = Snapshot(index, USERS, agents, TIERS)
            listed = Snapshot(list(index.values()), USERS, agents, TIERS)
            _same_estimates(snap, listed, now, state)
            got, expected = plan(snap, now, state), reference.plan(listed, now, ref_state)
            assert got == expected
            state, ref_state = got.state, expected.state
            for job_id in got.job_ids:  # the farm takes assigned jobs out of line
                index.discard(job_id)


def test_interleaved_aged_backlogs_of_many_users_decide_like_the_reference() -> None:
    # 20 users' backlogs nobody can run, interleaved in age, mostly aged; some users
    # also have a runnable job behind theirs, and one user's backlog is all it has.
    users = {f"u{k}": User(f"u{k}", ("free", "plus")[k % 2]) for k in range(20)}
    jobs = [job(f"b{i:04d}", f"u{i % 20}", float(i), steps=300) for i in range(2000)]
    jobs += [job(f"r{k}", f"u{k}", 1500.0 + k, steps=16) for k in range(0, 20, 3)]
    agents = [agent("x", free_slots=2, max_batch=2), agent("y", free_slots=1)]
    for now in (1000.0, 2100.0, 1e6):
        snap = Snapshot(QueueIndex(jobs), users, agents, TIERS)
        listed = Snapshot(jobs, users, agents, TIERS)
        assert plan(snap, now) == reference.plan(listed, now)
        _same_estimates(snap, listed, now, FairState())


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 10**6), max_size=60), st.data())
def test_extend_builds_the_lines_adding_one_by_one_would(
    seeds: list[int], data: st.DataObject
) -> None:
    jobs = [data.draw(new_job(n)) for n in range(len(seeds))]
    kept = data.draw(st.lists(st.sampled_from(jobs), max_size=5)) if jobs else []
    one_by_one, at_once = QueueIndex([*kept, *jobs]), QueueIndex(kept)
    at_once.extend(jobs)  # a job already queued is replaced, as add() does
    assert dict(at_once) == dict(one_by_one)
    assert set(at_once.lines) == set(one_by_one.lines)
    for user_id, line in one_by_one.lines.items():
        other = at_once.lines[user_id]
        assert (other.jobs, other.keys, other.groups) == (line.jobs, line.keys, line.groups)
    assert sorted(j.id for j in at_once.bumped()) == sorted(j.id for j in one_by_one.bumped())
