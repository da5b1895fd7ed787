"""Whole-loop properties: liveness, weighted shares under saturation, the aging bound."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler import Job, Snapshot, User
from scheduler.simulation import simulate
from tests.support.scheduling import agent, job, make_tiers, snapshots

PROPS = settings(max_examples=25, deadline=None)


@settings(max_examples=80, deadline=None)
@given(snapshots(max_jobs=25), st.integers(1, 50))
def test_simulation_every_runnable_job_eventually_runs(snap: Snapshot, seconds: int) -> None:
    idle = {uid: replace(u, running=0) for uid, u in snap.users.items()}  # nobody else runs
    out = simulate(snap.jobs, idle, snap.agents, snap.tiers, lambda j: float(seconds + j.steps % 7))
    ran = [r.job.id for r in out.runs]
    assert len(ran) == len(set(ran))
    for j in snap.jobs:
        runnable = j.user_id in snap.users and any(
            a.free_slots > 0 and a.can_run(j) for a in snap.agents
        )
        assert (j.id in ran) == runnable, j


def saturate(  # type: ignore[no-untyped-def]
    weights: dict[str, float], steps: dict[str, int], jobs_per_user: int, slots: int, batch: int = 1
):
    """3 users per tier, each with a standing backlog; tiers sized to drain together.

    The lightest tier (weight / steps) gets ``jobs_per_user`` jobs per user, the
    others proportionally more, so the fully backlogged window holds many jobs
    of every tier and one job's granularity stays far below 5%.
    """
    tiers = make_tiers(weights, max_concurrent=4, max_queued=4)
    rate = {name: weights[name] / steps[name] for name in weights}
    users, jobs = {}, []
    for name in weights:
        n = round(jobs_per_user * rate[name] / min(rate.values()))
        for u in range(3):
            uid = f"{name}-{u}"
            users[uid] = User(uid, name)
            jobs += [
                job(f"{uid}-{k}", uid, 0.0, batch_key=f"k{k % 2}", steps=steps[name])
                for k in range(n)
            ]
    agents = [agent(f"a{i}", max_batch=batch) for i in range(slots)]
    return simulate(jobs, users, agents, tiers, lambda j: j.steps / 16, limit_queued=True)


@PROPS
@given(
    st.lists(st.sampled_from([1.0, 2.0, 3.0, 6.0, 10.0]), min_size=3, max_size=3),
    st.lists(st.sampled_from([32, 64]), min_size=3, max_size=3),
    st.integers(1, 4),
    st.sampled_from([1, 1, 3]),
)
def test_simulation_saturated_shares_follow_weights(
    ws: list[float], steps: list[int], slots: int, batch: int
) -> None:
    names = ["free", "plus", "pro"]
    weights = dict(zip(names, ws, strict=True))
    out = saturate(weights, dict(zip(names, steps, strict=True)), 25, slots, batch)
    last_start = Counter[str]()
    for r in out.runs:
        last_start[r.tier] = max(last_start[r.tier], int(r.start))
    cut = min(last_start.values())  # every tier is backlogged before this
    served = Counter[str]()
    for r in out.runs:
        if r.start < cut:
            served[r.tier] += r.job.steps
    total, wsum = sum(served.values()), sum(ws)
    for name in names:
        share, target = served[name] / total, weights[name] / wsum
        assert abs(share - target) <= 0.05 * target, (name, share, target)


@PROPS
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 400)), min_size=1, max_size=60),
    st.integers(1, 3),
    st.sampled_from([20.0, 60.0]),
)
def test_simulation_aging_bound_holds_under_load(
    arrivals: list[tuple[int, int]], slots: int, aging_s: float
) -> None:
    # Users 0-1 are free, 2-3 pro (weight 6); pro floods the queue on top of `arrivals`.
    tiers = make_tiers({"free": 1.0, "pro": 6.0}, max_concurrent=100, aging_s=aging_s)
    users = {f"u{i}": User(f"u{i}", "free" if i < 2 else "pro") for i in range(4)}
    jobs = [job(f"j{n}", f"u{u}", float(t)) for n, (u, t) in enumerate(arrivals)]
    jobs += [job(f"flood{n}", f"u{2 + n % 2}", float(n)) for n in range(200)]
    d = 10.0
    out = simulate(jobs, users, [agent(f"a{i}") for i in range(slots)], tiers, lambda j: d)
    start = {r.job.id: r.start for r in out.runs}
    tier = {r.job.id: r.tier for r in out.runs}
    assert len(start) == len(jobs)
    share = {"free": 7.0 / 1.0, "pro": 7.0 / 6.0}  # sum of weights / own weight
    for j in jobs:
        aged_at = j.enqueued_at + aging_s
        older_waiting = sum(
            1
            for k in jobs
            if tier[k.id] == tier[j.id]
            and (k.enqueued_at, k.id) < (j.enqueued_at, j.id)
            and start[k.id] > aged_at
        )
        bound = aging_s + (older_waiting + 1) * d * share[tier[j.id]] / slots + d
        assert start[j.id] - j.enqueued_at <= bound, (j.id, start[j.id], bound)
        # Structural: once aged, no younger job of its tier starts before it.
        for k in jobs:
            if tier[k.id] == tier[j.id] and (k.enqueued_at, k.id) > (j.enqueued_at, j.id):
                assert not (aged_at <= start[k.id] < start[j.id]), (j.id, k.id)


def test_simulation_credit_raises_share_inside_tier() -> None:
    tiers = make_tiers({"free": 1.0}, max_concurrent=10, max_queued=100, aging_s=1e9)
    users = {"vol": User("vol", "free", credit=1000.0), "plain": User("plain", "free")}
    jobs: list[Job] = [job(f"{u}{k}", u, 0.0) for u in users for k in range(60)]
    out = simulate(jobs, users, [agent("a")], tiers, lambda j: 1.0)
    first = Counter(r.job.user_id for r in sorted(out.runs, key=lambda r: r.start)[:60])
    assert first == {"vol": 40, "plain": 20}  # credit caps the weight at 2x
