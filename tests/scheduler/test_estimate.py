"""queue_positions(): dispatch order, ETA rules, agreement with plan()."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler import Snapshot, User, plan, queue_positions
from tests.support.scheduling import TIERS, agent, job, snapshots

PROPS = settings(max_examples=150, deadline=None)


def users(**tiers: str) -> dict[str, User]:
    return {uid: User(uid, tier) for uid, tier in tiers.items()}


def test_queue_positions_order_eta_and_unrunnable_last() -> None:
    jobs = [
        job("f0", "f", 0.0),
        job("f1", "f", 1.0),
        job("p0", "p", 2.0),
        job("huge", "p", 0.5, steps=999),
    ]
    snap = Snapshot(jobs, users(f="free", p="pro"), [agent("x", 1, total_slots=2)], TIERS)
    est = queue_positions(snap, 10.0, None, avg_job_seconds=60.0)
    assert [est[j].position for j in ("p0", "f0", "f1", "huge")] == [1, 2, 3, 4]
    assert est["p0"].eta_s == 0.0 and est["f0"].eta_s == 0.0
    assert est["f1"].eta_s == 60.0  # third in line on two slots
    assert est["huge"].eta_s is None


def test_queue_positions_user_cap_delays_own_jobs() -> None:
    jobs = [job(f"f{i}", "f", float(i)) for i in range(4)]
    snap = Snapshot(
        jobs, {"f": User("f", "free", running=1)}, [agent("x", 0, total_slots=50)], TIERS
    )
    est = queue_positions(snap, 10.0, None, avg_job_seconds=10.0)
    # free allows 2 at once and one is running: rounds of 2.
    assert [est[f"f{i}"].eta_s for i in range(4)] == [0.0, 10.0, 10.0, 20.0]


@PROPS
@given(snapshots(), st.floats(0, 3000))
def test_queue_positions_cover_queue_and_first_matches_plan(snap: Snapshot, now: float) -> None:
    est = queue_positions(snap, now, None, avg_job_seconds=30.0)
    known = [j for j in snap.jobs if j.user_id in snap.users]
    assert sorted(e.position for e in est.values()) == list(range(1, len(known) + 1))
    runnable = {j.id for j in known if any(a.can_run(j) for a in snap.agents)}
    assert {jid for jid, e in est.items() if e.eta_s is not None} == runnable
    assert all(est[r].position < est[u].position for r in runnable for u in set(est) - runnable)
    # With one roomy slot and no caps in the way, plan() starts the job ranked first.
    roomy = replace(
        snap,
        agents=[replace(a, free_slots=1, max_batch=1, max_steps=10_000) for a in snap.agents],
        users={u: replace(v, running=0) for u, v in snap.users.items()},
    )
    if roomy.agents and known:
        est_roomy = queue_positions(roomy, now, None, 30.0)
        first = min(est_roomy, key=lambda jid: est_roomy[jid].position)
        if est_roomy[first].eta_s is not None:
            assert plan(roomy, now).job_ids[0] == first
