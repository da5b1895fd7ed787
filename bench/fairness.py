"""Fair-share benchmark: saturate a simulated farm and measure shares, waits and plan() speed.

    python bench/fairness.py                 # defaults: 3 tiers x 20 users x 1000 jobs, 10 agents
    python bench/fairness.py --durations random --seed 7
    python bench/fairness.py --write-docs    # also rewrite "## Scheduling" in docs/benchmarks.md

The clock is simulated (scheduler.simulation); only this script uses randomness,
always through ``random.Random(seed)``.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import time
import tomllib
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from scheduler import Agent, Job, Snapshot, Tier, User, parse_tiers, plan
from scheduler.simulation import Outcome, simulate

ROOT = Path(__file__).resolve().parents[1]
TIERS_TOML = ROOT / "coordinator" / "tiers.toml"
DOCS = ROOT / "docs" / "benchmarks.md"
SECTION = "## Scheduling"


@dataclass(frozen=True)
class TierRow:
    name: str
    weight: float
    target: float
    share_steps: float
    share_gpu: float
    jobs: int
    p50: float
    p99: float
    max: float


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/fairness.py", description=__doc__.splitlines()[0])
    p.add_argument("--tiers", default="free,plus,pro", help="tiers from tiers.toml to load")
    p.add_argument("--tiers-file", type=Path, default=TIERS_TOML)
    p.add_argument("--users", type=int, default=20, help="users per tier")
    p.add_argument("--jobs", type=int, default=1000, help="jobs per user")
    p.add_argument("--agents", type=int, default=10)
    p.add_argument("--slots", type=int, default=1, help="slots per agent")
    p.add_argument("--max-batch", type=int, default=1, help="agent max batch")
    p.add_argument("--steps", type=int, default=64, help="steps of every job")
    p.add_argument("--job-seconds", type=float, default=20.0, help="mean job duration")
    p.add_argument(
        "--durations",
        choices=("fixed", "random"),
        default="fixed",
        help="fixed, or uniform in [0.5, 1.5] x mean from random.Random(seed)",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--submit",
        choices=("patient", "burst"),
        default="patient",
        help="patient: each user keeps max_queued jobs waiting and submits more as "
        "they start (what admission allows); burst: everything queued at t=0 "
        "(queue limits ignored; slow for large --jobs)",
    )
    p.add_argument(
        "--plan-queue", type=int, default=10_000, help="queued jobs for the plan() timing"
    )
    p.add_argument("--repeat", type=int, default=5, help="plan() timing repetitions (best kept)")
    p.add_argument("--write-docs", action="store_true", help=f"rewrite '{SECTION}' in {DOCS}")
    return p.parse_args(argv)


def load_tiers(args: argparse.Namespace) -> dict[str, Tier]:
    with args.tiers_file.open("rb") as fh:
        every = parse_tiers(tomllib.load(fh))
    names = [n.strip() for n in args.tiers.split(",") if n.strip()]
    missing = [n for n in names if n not in every]
    if missing:
        raise SystemExit(f"unknown tiers {missing}; {args.tiers_file} has {list(every)}")
    return {n: every[n] for n in names}


def workload(
    args: argparse.Namespace, tiers: dict[str, Tier], jobs_per_user: int
) -> tuple[list[Job], dict[str, User]]:
    users: dict[str, User] = {}
    jobs: list[Job] = []
    for name in tiers:
        for u in range(args.users):
            uid = f"{name}-{u:02d}"
            users[uid] = User(uid, name)
            jobs += [
                Job(f"{uid}-{k:05d}", uid, 0.0, f"k{k % 4}", args.steps)
                for k in range(jobs_per_user)
            ]
    return jobs, users


def run_saturation(args: argparse.Namespace, tiers: dict[str, Tier]) -> tuple[Outcome, float]:
    jobs, users = workload(args, tiers, args.jobs)
    agents = [
        Agent(f"agent-{i:02d}", args.slots, args.max_batch, 1024, frozenset({"shap-e"}))
        for i in range(args.agents)
    ]
    rnd = random.Random(args.seed)
    seconds = {
        j.id: args.job_seconds * (rnd.uniform(0.5, 1.5) if args.durations == "random" else 1.0)
        for j in jobs
    }
    started = time.perf_counter()
    outcome = simulate(
        jobs, users, agents, tiers, lambda j: seconds[j.id], limit_queued=args.submit == "patient"
    )
    return outcome, time.perf_counter() - started


def tier_rows(outcome: Outcome, tiers: dict[str, Tier]) -> tuple[list[TierRow], float]:
    """Shares inside the window where every tier still had work, waits over all jobs."""
    last_start: dict[str, float] = {}
    for r in outcome.runs:
        last_start[r.tier] = max(last_start.get(r.tier, 0.0), r.start)
    cut = min(last_start.values())
    steps: Counter[str] = Counter()
    gpu: defaultdict[str, float] = defaultdict(float)
    waits: defaultdict[str, list[float]] = defaultdict(list)
    for r in outcome.runs:
        waits[r.tier].append(r.wait)
        if r.start < cut:
            steps[r.tier] += r.job.steps
            gpu[r.tier] += (r.end - r.start) / r.batch_size
    total_w = sum(t.weight for t in tiers.values())
    total_steps, total_gpu = sum(steps.values()), sum(gpu.values())
    rows = []
    for name, tier in tiers.items():
        w = sorted(waits[name])
        rows.append(
            TierRow(
                name,
                tier.weight,
                tier.weight / total_w,
                steps[name] / total_steps,
                gpu[name] / total_gpu,
                len(w),
                statistics.median(w),
                w[min(len(w) - 1, int(0.99 * len(w)))],
                w[-1],
            )
        )
    return rows, cut


def time_plan(args: argparse.Namespace, tiers: dict[str, Tier]) -> dict[str, float]:
    """plan() on --plan-queue queued jobs: wide (many free slots) and narrow (10 slots)."""
    per_user = max(1, args.plan_queue // (len(tiers) * args.users))
    jobs, users = workload(args, tiers, per_user)
    rnd = random.Random(args.seed)
    jobs = [Job(j.id, j.user_id, float(rnd.randrange(3600)), j.batch_key, j.steps) for j in jobs]
    users = {u: User(u, x.tier, 0, 0.0) for u, x in users.items()}
    wide_tiers = {
        n: Tier(
            t.name,
            t.weight,
            t.daily_quota,
            10**6,
            t.max_steps,
            t.max_variants,
            t.max_guidance,
            t.max_queued,
            t.rank,
            t.aging_s,
        )
        for n, t in tiers.items()
    }
    shapes = {
        "wide": (
            wide_tiers,
            [Agent(f"a{i}", 10, 1, 1024, frozenset({"shap-e"})) for i in range(200)],
        ),
        "narrow": (tiers, [Agent(f"a{i}", 1, 1, 1024, frozenset({"shap-e"})) for i in range(10)]),
    }
    result: dict[str, float] = {"queued": float(len(jobs))}
    for label, (shape_tiers, agents) in shapes.items():
        snap = Snapshot(jobs, users, agents, shape_tiers)
        best, decisions = float("inf"), 0
        for _ in range(args.repeat):
            started = time.perf_counter()
            decisions = len(plan(snap, 3600.0).job_ids)
            best = min(best, time.perf_counter() - started)
        result[f"{label}_decisions"] = decisions
        result[f"{label}_ms"] = best * 1000
        result[f"{label}_per_s"] = decisions / best
    return result


def render(
    args: argparse.Namespace,
    rows: list[TierRow],
    cut: float,
    outcome: Outcome,
    sim_s: float,
    speed: dict[str, float],
    argv: Sequence[str],
) -> str:
    cmd = " ".join(["python bench/fairness.py", *[a for a in argv if a != "--write-docs"]])
    lines = [
        f"Command: `{cmd}` ({platform.python_implementation()} {platform.python_version()}, "
        f"{platform.machine()}).",
        "",
        f"Saturation: {len(rows)} tiers x {args.users} users x {args.jobs} jobs of {args.steps} "
        f"steps, {args.agents} agents x {args.slots} slot(s), max batch {args.max_batch}, "
        f"{args.durations} durations (mean {args.job_seconds:g} s, seed {args.seed}), "
        f"{args.submit} submission. {len(outcome.runs)} jobs, {outcome.plan_calls} plan() "
        f"calls, simulated {outcome.end / 3600:.1f} h in {sim_s:.1f} s. Shares are measured "
        f"while every tier was backlogged (first {cut / 3600:.1f} h); waits over all jobs.",
        "",
        "| tier | weight | target share | share (job-steps) | share (GPU time) | jobs "
        "| p50 wait | p99 wait | max wait |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        dev = (r.share_steps - r.target) / r.target * 100
        lines.append(
            f"| {r.name} | {r.weight:g} | {r.target:.3f} | {r.share_steps:.3f} ({dev:+.1f}%) "
            f"| {r.share_gpu:.3f} | {r.jobs} | {r.p50:.0f} s | {r.p99:.0f} s | {r.max:.0f} s |"
        )
    lines += [
        "",
        f"plan() speed with {speed['queued']:.0f} queued jobs (best of {args.repeat}):",
        "",
        "| free slots | jobs placed | time per call | decisions/s |",
        "|---|---:|---:|---:|",
        f"| 200 agents x 10 | {speed['wide_decisions']:.0f} | {speed['wide_ms']:.1f} ms "
        f"| {speed['wide_per_s']:,.0f} |",
        f"| 10 agents x 1 | {speed['narrow_decisions']:.0f} | {speed['narrow_ms']:.1f} ms "
        f"| {speed['narrow_per_s']:,.0f} |",
    ]
    return "\n".join(lines) + "\n"


def write_docs(body: str) -> None:
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    section = f"{SECTION}\n\n{body}"
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == SECTION), None)
    if start is None:
        new = text.rstrip("\n") + "\n\n" + section
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        tail = "".join(lines[end:])
        new = "".join(lines[:start]) + section + ("\n" + tail if tail else "")
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    DOCS.write_text(new)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    tiers = load_tiers(args)
    outcome, sim_s = run_saturation(args, tiers)
    rows, cut = tier_rows(outcome, tiers)
    speed = time_plan(args, tiers)
    body = render(args, rows, cut, outcome, sim_s, speed, argv)
    print(body, end="")
    worst = max(abs(r.share_steps - r.target) / r.target for r in rows)
    print(
        f"\nworst share deviation {worst * 100:.1f}% (target <= 5%); "
        f"wide plan() {speed['wide_per_s']:,.0f} decisions/s (target >= 10,000)"
    )
    if args.write_docs:
        write_docs(body)
        print(f"wrote '{SECTION}' in {DOCS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
