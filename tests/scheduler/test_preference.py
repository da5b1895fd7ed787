"""Owner controls in the scheduler: "my own jobs first" and agents that declined a job."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler import Job, Snapshot, User, plan
from tests.support.scheduling import TIERS, agent, check_plan, job, snapshots

USERS = {u: User(u, "free") for u in ("u0", "u1", "u2")}


def snap(jobs: list[Job], agents: list[object], users: dict[str, User] | None = None) -> Snapshot:
    return Snapshot(jobs, users or USERS, agents, TIERS)  # type: ignore[arg-type]


def assigned(snapshot: Snapshot) -> dict[str, tuple[str, ...]]:
    return {a.agent_id: a.job_ids for a in plan(snapshot, 1000.0).assignments}


def prefer(a: object, *users: str) -> object:
    return dataclasses.replace(a, preferred_users=frozenset(users))  # type: ignore[type-var]


def test_preference_owner_job_goes_first_to_its_agent() -> None:
    jobs = [job("old", "u0", enqueued_at=0.0), job("mine", "u1", enqueued_at=500.0)]
    assert assigned(snap(jobs, [agent("a0")])) == {"a0": ("old",)}
    assert assigned(snap(jobs, [prefer(agent("a0"), "u1")])) == {"a0": ("mine",)}


def test_preference_takes_the_oldest_head_among_preferred_users() -> None:
    jobs = [
        job("u0-a", "u0", enqueued_at=10.0),
        job("u1-a", "u1", enqueued_at=20.0),
        job("u2-a", "u2", enqueued_at=5.0),
    ]
    assert assigned(snap(jobs, [prefer(agent("a0"), "u0", "u1")])) == {"a0": ("u0-a",)}


def test_preference_never_jumps_the_users_own_line() -> None:
    # u1's head needs more steps than the agent runs: its later job does not jump it.
    jobs = [
        job("u0-a", "u0", enqueued_at=0.0),
        job("u1-big", "u1", enqueued_at=1.0, steps=200),
        job("u1-small", "u1", enqueued_at=2.0),
    ]
    result = assigned(snap(jobs, [prefer(agent("a0", max_steps=64), "u1")]))
    assert result == {"a0": ("u0-a",)}


def test_preference_respects_the_tiers_concurrency_cap() -> None:
    users = {**USERS, "u1": User("u1", "free", running=2)}  # free: max_concurrent 2
    jobs = [job("u0-a", "u0", enqueued_at=0.0), job("u1-a", "u1", enqueued_at=1.0)]
    assert assigned(snap(jobs, [prefer(agent("a0"), "u1")], users)) == {"a0": ("u0-a",)}


def test_preference_fills_a_batch_with_the_preferred_users_jobs() -> None:
    users = {u: User(u, "pro") for u in ("u0", "u1")}
    jobs = [job("u0-a", "u0", enqueued_at=0.0)] + [
        job(f"u1-{i}", "u1", enqueued_at=10.0 + i) for i in range(3)
    ]
    tiers_cap = plan(snap(jobs, [prefer(agent("a0", max_batch=3), "u1")], users), 1000.0)
    (only,) = tiers_cap.assignments
    # pro allows 2 at once: two of u1's jobs go first; fair share fills the last place
    assert only.job_ids == ("u1-0", "u1-1", "u0-a")


def test_preference_other_agents_still_serve_everyone_fairly() -> None:
    jobs = [job("u0-a", "u0", enqueued_at=0.0), job("u1-a", "u1", enqueued_at=500.0)]
    result = assigned(snap(jobs, [prefer(agent("a0"), "u1"), agent("a1")]))
    assert result == {"a0": ("u1-a",), "a1": ("u0-a",)}


def test_declined_job_never_goes_to_the_agent_that_declined_it() -> None:
    blocked = job("j", "u0", excluded_agents=frozenset({"a0"}))
    assert assigned(snap([blocked], [agent("a0")])) == {}  # nobody else: it waits
    assert assigned(snap([blocked], [agent("a0"), agent("a1")])) == {"a1": ("j",)}
    # and it does not stop the same user's next job from using a0
    after = job("k", "u0", enqueued_at=1.0)
    assert assigned(snap([blocked, after], [agent("a0")])) == {"a0": ("k",)}


@settings(max_examples=200, deadline=None)
@given(snapshots(), st.data())
def test_preference_plans_stay_valid_and_preferring_agents_get_preferred_work(
    snapshot: Snapshot, data: st.DataObject
) -> None:
    user_ids = sorted(snapshot.users)
    agents = [
        dataclasses.replace(
            a, preferred_users=frozenset(data.draw(st.sets(st.sampled_from(user_ids))))
        )
        for a in snapshot.agents
    ]
    agent_ids = [a.id for a in agents] or ["a0"]
    jobs = [
        dataclasses.replace(
            j,
            priority=0,
            excluded_agents=frozenset(data.draw(st.sets(st.sampled_from(agent_ids)))),
        )
        for j in snapshot.jobs
    ]
    snapshot = Snapshot(jobs, snapshot.users, agents, snapshot.tiers)
    result = plan(snapshot, 1000.0)
    check_plan(snapshot, result)
    by_id = {j.id: j for j in jobs}
    for assignment in result.assignments:
        for job_id in assignment.job_ids:
            assert assignment.agent_id not in by_id[job_id].excluded_agents
    first_pick = {a.agent_id: a.job_ids[0] for a in reversed(result.assignments)}
    for a in sorted(agents, key=lambda a: a.id):
        if a.free_slots <= 0 or not a.preferred_users:
            continue
        # Some preferred user's head (the oldest of its jobs) that a could run, under cap?
        heads = []
        for user_id in a.preferred_users:
            own = sorted(
                (j for j in jobs if j.user_id == user_id), key=lambda j: (j.enqueued_at, j.id)
            )
            user = snapshot.users[user_id]
            tier = snapshot.tiers.get(user.tier) or snapshot.tiers["free"]
            if own and a.can_run(own[0]) and user.running < tier.max_concurrent:
                heads.append(own[0])
        if heads and a.id == min(x.id for x in agents if x.preferred_users and x.free_slots > 0):
            # The first preferring agent (by id) is served before any other: it gets one.
            assert by_id[first_pick[a.id]].user_id in a.preferred_users
