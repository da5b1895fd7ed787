"""Replicas: jobs/s and dispatch latency of 1 vs 3 coordinator replicas on one PostgreSQL,
and fair shares across tiers measured through 3 replicas.

    python -m bench.replicas                # needs the PostgreSQL server binaries
    python -m bench.replicas --write-docs   # also rewrite its part of docs/benchmarks.md

Each configuration gets a fresh database on one throwaway PostgreSQL cluster and
coordinator processes sharing one data dir. In-process agents (``BenchAgent``, protocol
v1, zero-time generator) are spread over the replicas, and so are the API requests.

- latency: single-job submissions one after another while agents are idle; the time
  from sending the request to the ``assign`` reaching an agent (p50, p99).
- throughput: a burst of jobs (16 per request); jobs/s from the first request to the
  last ``result_ack``.
- fairness: three users on tiers weighted 1:3:6 each queue a backlog (through a
  different replica), then the agents connect; the tiers' shares of the first half of
  the assignments (every tier still waiting) against the weights.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from bench.common import BenchAgent, cancel_all, machine, percentile, raise_fd_limit, write_section
from protocol import Assign, ResultAck

if TYPE_CHECKING:
    from tests.support.procs import CoordinatorProcess

SECTION = "Replicas"
TIERS = "".join(
    f"""
[tiers.{name}]
rank = {rank}
weight = {weight}
daily_quota = 10000000
max_concurrent = 100000
max_steps = 64
max_variants = 16
max_guidance = 15.0
max_queued = 1000000
"""
    for rank, (name, weight) in enumerate((("free", 1.0), ("plus", 3.0), ("pro", 6.0)))
)
WEIGHTS = {"free": 1.0, "plus": 3.0, "pro": 6.0}


@dataclass
class Replicas:
    procs: list[CoordinatorProcess]
    keys: dict[str, str]  # tier -> its user's API key
    tokens: list[str]

    def url(self, i: int) -> str:
        return self.procs[i % len(self.procs)].http

    def ws(self, i: int) -> str:
        return self.procs[i % len(self.procs)].ws


@contextlib.asynccontextmanager
async def replicas(template: str, n: int, agents: int, mode: bool) -> AsyncIterator[Replicas]:
    from coordinator.cli.admin_cli import create_api_key, create_user, issue_token, set_tier
    from tests.support.coordinators import make_settings
    from tests.support.postgres import copy_database
    from tests.support.procs import CoordinatorProcess, coordinator_env, free_port

    url = copy_database(template, f"bench_{secrets.token_hex(6)}")
    data = Path(tempfile.mkdtemp(prefix="shapefarm-bench-replicas-"))
    tiers = data / "tiers.toml"
    tiers.write_text(TIERS)
    settings = make_settings(data, database_url=url, tiers_file=tiers)
    keys: dict[str, str] = {}
    for tier in WEIGHTS:
        await create_user(settings, tier, "a long bench password", None, is_admin=False)
        if tier != "free":
            await set_tier(settings, tier, tier, None)
        keys[tier] = await create_api_key(settings, tier, "bench")
    tokens = [(await issue_token(settings, "free", f"agent {i}", True))[1] for i in range(agents)]
    env = coordinator_env(
        database_url=url, tiers_file=tiers, secret_key=secrets.token_urlsafe(32),
        replicas=str(mode).lower(), heartbeat_s=10, lease_s=120,
    )  # fmt: skip
    procs = [CoordinatorProcess(data, free_port(), env, data / f"r{i}.log") for i in range(n)]
    try:
        await asyncio.gather(*(proc.start() for proc in procs))
        if mode:
            async with httpx.AsyncClient() as client:
                for _ in range(100):  # the first leader takes the lock within a second
                    found = [(await client.get(f"{p.http}/healthz")).json() for p in procs]
                    if any(h.get("leader") for h in found):
                        break
                    await asyncio.sleep(0.1)
        yield Replicas(procs, keys, tokens)
    finally:
        for proc in procs:
            proc.stop()


async def _fleet(farm: Replicas, agents: list[BenchAgent]) -> list[asyncio.Task[None]]:
    tasks = [asyncio.create_task(a.run()) for a in agents]
    await asyncio.wait_for(asyncio.gather(*(a.ready.wait() for a in agents)), 60)
    return tasks


async def latency_and_throughput(
    template: str, n: int, mode: bool, agents: int, single: int, burst: int
) -> dict[str, float]:
    assigned: dict[str, float] = {}
    acked = 0
    done, news = asyncio.Event(), asyncio.Event()
    want = single + burst

    def on_assign(message: Assign, now: float) -> None:
        for spec in message.jobs:
            assigned.setdefault(spec.job, now)
        news.set()

    def on_ack(message: ResultAck, now: float) -> None:
        nonlocal acked
        acked += 1
        if acked >= want:
            done.set()

    async with replicas(template, n, agents, mode) as farm:
        fleet = [BenchAgent(farm.ws(i), t, on_assign=on_assign, on_ack=on_ack)
                 for i, t in enumerate(farm.tokens)]  # fmt: skip
        tasks = await _fleet(farm, fleet)
        headers = {"Authorization": f"Bearer {farm.keys['free']}"}
        try:
            async with httpx.AsyncClient(timeout=60, headers=headers) as client:
                sent: dict[str, float] = {}
                for i in range(single):
                    started = time.perf_counter()
                    made = await client.post(f"{farm.url(i)}/api/v1/jobs",
                                             json={"prompt": "a cube", "steps": 4})  # fmt: skip
                    made.raise_for_status()
                    job_id = made.json()["jobs"][0]["id"]
                    sent[job_id] = started
                    while job_id not in assigned:  # the next one waits for this assignment
                        await asyncio.wait_for(news.wait(), 60)
                        news.clear()
                waits = [assigned[j] - t for j, t in sent.items()]
                started = time.perf_counter()
                requests = [
                    client.post(f"{farm.url(i)}/api/v1/jobs",
                                json={"prompt": "a sphere", "steps": 4, "variants": 16})
                    for i in range(burst // 16)
                ]  # fmt: skip
                for answer in await asyncio.gather(*requests):
                    answer.raise_for_status()
                await asyncio.wait_for(done.wait(), 600)
                elapsed = time.perf_counter() - started
        finally:
            await cancel_all(tasks)
    return {
        "p50_ms": percentile(waits, 50) * 1000,
        "p99_ms": percentile(waits, 99) * 1000,
        "rate": (burst // 16 * 16) / elapsed,
    }


async def fairness(template: str, n: int, agents: int, backlog: int) -> dict[str, float]:
    order: list[str] = []
    owner: dict[str, str] = {}
    window_full = asyncio.Event()

    def on_assign(message: Assign, now: float) -> None:
        order.extend(owner.get(spec.job, "?") for spec in message.jobs)
        if len(order) >= backlog * 3 // 2:
            window_full.set()

    async with replicas(template, n, agents, True) as farm:
        for i, (tier, key) in enumerate(farm.keys.items()):
            async with httpx.AsyncClient(
                timeout=60, headers={"Authorization": f"Bearer {key}"}
            ) as client:
                for _ in range(backlog // 16):
                    made = await client.post(
                        f"{farm.url(i)}/api/v1/jobs",
                        json={"prompt": tier, "steps": 8, "variants": 16},
                    )
                    made.raise_for_status()
                    owner.update((job["id"], tier) for job in made.json()["jobs"])  # fmt: skip
        fleet = [BenchAgent(farm.ws(i), t, on_assign=on_assign)
                 for i, t in enumerate(farm.tokens)]  # fmt: skip
        tasks = await _fleet(farm, fleet)
        try:
            await asyncio.wait_for(window_full.wait(), 600)
        finally:
            await cancel_all(tasks)
    window = Counter(order[: backlog * 3 // 2])
    total = sum(window.values())
    return {tier: window[tier] / total for tier in WEIGHTS}


def render(rows: list[tuple[str, dict[str, float]]], shares: dict[str, float],
           args: argparse.Namespace, command: str) -> str:  # fmt: skip
    weight_sum = sum(WEIGHTS.values())
    lines = [
        f"Command: `{command}` ({machine()}).\n\n",
        f"{args.agents} in-process agents (zero-time generator) spread over the replicas; "
        f"requests spread over them too. Latency: {args.single} single-job submissions, "
        "one after another, request sent to `assign` received. Throughput: "
        f"{args.burst} jobs in requests of 16, first request to last `result_ack`. Every "
        "process shares this machine's cores (and PostgreSQL), so more replicas add "
        "coordination cost here without adding CPUs.\n\n",
        "| coordinators | dispatch p50 | dispatch p99 | jobs/s |\n|---|---:|---:|---:|\n",
    ]
    lines += [f"| {name} | {r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms | {r['rate']:.0f} |\n"
              for name, r in rows]  # fmt: skip
    lines.append(
        f"\nFair shares through 3 replicas: three users (tiers weighted 1:3:6), each with a "
        f"backlog of {args.backlog} jobs queued through a different replica; shares of the "
        f"first {args.backlog * 3 // 2} assignments (all tiers still waiting).\n\n"
        "| tier | weight share | measured | difference |\n|---|---:|---:|---:|\n"
    )
    for tier, weight in WEIGHTS.items():
        target = weight / weight_sum
        lines.append(f"| {tier} | {target:.1%} | {shares[tier]:.1%} | "
                     f"{(shares[tier] - target) * 100:+.1f} points |\n")  # fmt: skip
    return "".join(lines)


async def run(args: argparse.Namespace) -> str:
    from coordinator.store.migrations import upgrade_sync
    from tests.support.postgres import throwaway_postgres

    with throwaway_postgres() as template:
        await asyncio.to_thread(upgrade_sync, template)
        rows = []
        for name, n, mode in (("1 process (replica mode off)", 1, False),
                              ("1 replica", 1, True), ("3 replicas", 3, True)):  # fmt: skip
            rows.append((name, await latency_and_throughput(
                template, n, mode, args.agents, args.single, args.burst)))  # fmt: skip
        shares = await fairness(template, 3, args.agents, args.backlog)
    command = " ".join(["python -m bench.replicas",
                        *[a for a in args.argv if a != "--write-docs"]])  # fmt: skip
    return render(rows, shares, args, command)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=12)
    parser.add_argument("--single", type=int, default=200, help="latency submissions")
    parser.add_argument("--burst", type=int, default=1600, help="throughput jobs")
    parser.add_argument("--backlog", type=int, default=400, help="fairness jobs per tier")
    parser.add_argument("--write-docs", action="store_true", help=f"rewrite '{SECTION}'")
    args = parser.parse_args(argv)
    args.argv = argv
    raise_fd_limit()
    body = asyncio.run(run(args))
    print(body, end="")
    if args.write_docs:
        write_section(SECTION, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
