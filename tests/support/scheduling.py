"""Builders, hypothesis strategies and invariant checks shared by the scheduler tests."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from hypothesis import strategies as st

from scheduler import Agent, Job, Plan, Snapshot, Tier, User, parse_tiers

MODELS = ("shap-e", "shap-e-img")


def tier_table(weight: float, **overrides: float) -> dict[str, float]:
    table: dict[str, float] = {
        "weight": weight,
        "daily_quota": 100,
        "max_concurrent": 2,
        "max_steps": 256,
        "max_variants": 4,
        "max_guidance": 20.0,
        "max_queued": 10,
        "aging_s": 600.0,
    }
    table.update(overrides)
    return table


def make_tiers(weights: dict[str, float] | None = None, **overrides: float) -> dict[str, Tier]:
    weights = weights or {"free": 1.0, "plus": 3.0, "pro": 6.0}
    tables = {
        name: {**tier_table(w, **overrides), "rank": rank}
        for rank, (name, w) in enumerate(weights.items())
    }
    return parse_tiers({"tiers": tables})


TIERS = make_tiers()


def agent(
    agent_id: str,
    free_slots: int = 1,
    max_batch: int = 1,
    max_steps: int = 256,
    models: Iterable[str] = ("shap-e",),
    total_slots: int = 0,
) -> Agent:
    return Agent(agent_id, free_slots, max_batch, max_steps, frozenset(models), total_slots)


def job(
    job_id: str,
    user_id: str,
    enqueued_at: float = 0.0,
    batch_key: str = "k",
    steps: int = 64,
    **kw: object,
) -> Job:
    return Job(job_id, user_id, enqueued_at, batch_key, steps, **kw)  # type: ignore[arg-type]


@st.composite
def snapshots(draw: st.DrawFn, max_jobs: int = 30) -> Snapshot:
    n_users = draw(st.integers(1, 6))
    users = {
        f"u{i}": User(
            f"u{i}",
            draw(st.sampled_from(["free", "plus", "pro", "gone"])),  # "gone" -> free
            running=draw(st.integers(0, 2)),
            credit=draw(st.sampled_from([0.0, 0.0, 50.0, 500.0])),
        )
        for i in range(n_users)
    }
    agents = [
        Agent(
            f"a{i}",
            free_slots=draw(st.integers(0, 3)),
            max_batch=draw(st.integers(1, 3)),
            max_steps=draw(st.sampled_from([32, 64, 256])),
            models=frozenset(draw(st.sets(st.sampled_from(MODELS), min_size=1))),
        )
        for i in range(draw(st.integers(0, 4)))
    ]
    jobs = [
        Job(
            f"j{i}",
            f"u{draw(st.integers(0, n_users))}",  # u{n_users} is unknown: never assigned
            enqueued_at=float(draw(st.integers(0, 1500))),
            batch_key=draw(st.sampled_from("abc")),
            steps=draw(st.sampled_from([16, 64, 128, 300])),
            model=draw(st.sampled_from(MODELS)),
            attempt=draw(st.integers(0, 2)),
            priority=draw(st.sampled_from([0, 0, 0, 0, 1, 2])),
        )
        for i in range(draw(st.integers(0, max_jobs)))
    ]
    return Snapshot(jobs, users, agents, TIERS)


def tier_of(snapshot: Snapshot, user_id: str) -> Tier:
    return snapshot.tiers.get(snapshot.users[user_id].tier) or snapshot.tiers["free"]


def check_plan(snapshot: Snapshot, result: Plan) -> None:
    """Every hard constraint, plus maximality: nothing left that a free slot could run."""
    jobs = {j.id: j for j in snapshot.jobs}
    agents = {a.id: a for a in snapshot.agents}
    ids = result.job_ids
    assert len(ids) == len(set(ids)), "a job was assigned twice"
    per_agent = Counter(a.agent_id for a in result.assignments)
    per_user: Counter[str] = Counter()
    for assignment in result.assignments:
        ag = agents[assignment.agent_id]
        batch = [jobs[i] for i in assignment.job_ids]
        assert 1 <= len(batch) <= ag.max_batch
        assert len({j.batch_key for j in batch}) == 1
        for j in batch:
            assert j.model in ag.models and j.steps <= ag.max_steps
            assert j.user_id in snapshot.users
            per_user[j.user_id] += 1
    for agent_id, n in per_agent.items():
        assert n <= agents[agent_id].free_slots
    for user_id, n in per_user.items():
        user = snapshot.users[user_id]
        assert user.running + n <= tier_of(snapshot, user_id).max_concurrent
    left = {a.id: a.free_slots - per_agent[a.id] for a in snapshot.agents}
    for j in snapshot.jobs:
        if j.id in ids or j.user_id not in snapshot.users:
            continue
        user = snapshot.users[j.user_id]
        if user.running + per_user[j.user_id] >= tier_of(snapshot, j.user_id).max_concurrent:
            continue
        assert not any(left[a.id] > 0 and a.can_run(j) for a in snapshot.agents), (
            f"{j.id} could still run on a free slot"
        )
