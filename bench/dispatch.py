"""Dispatch latency: job submitted over the API → ``assign`` received by an agent.

    python -m bench.dispatch                 # 100 agents, 1000 queued jobs, 300 probes
    python -m bench.dispatch --write-docs    # also rewrite its part of docs/benchmarks.md

100 in-process agents are connected and idle. The 1000-job backlog asks for
more steps than any agent offers (``max_steps`` 64 < 128), so it stays queued
and every dispatch pass plans over it. Each probe job (4 steps) is submitted
alone; the clock runs from just before the POST to the agent's receipt of its
``assign`` (same process, same clock). The agent then uploads the result and the
next probe waits for its ``result_ack``, so probes never overlap.

It also times the last fifth of the backlog going in (at most 2000 jobs, 16 per
request from one client: submissions/s with the queue nearly full) and reads the
coordinator's RSS at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence

from bench.common import (
    BenchAgent,
    cancel_all,
    machine,
    percentile,
    raise_fd_limit,
    start_farm,
    write_section,
)
from protocol import Assign, ResultAck

SECTION = "Dispatch and throughput"
TARGET_P99_MS = 20.0


async def run(agents: int, backlog: int, probes: int) -> dict[str, float]:
    farm = await start_farm(agents, heartbeat_s=10, lease_s=120)
    assigned: dict[str, float] = {}
    acked: dict[str, asyncio.Event] = {}

    def on_assign(message: Assign, now: float) -> None:
        for spec in message.jobs:
            assigned[spec.job] = now

    def on_ack(message: ResultAck, now: float) -> None:
        acked.setdefault(message.job, asyncio.Event()).set()

    fleet = [BenchAgent(farm.ws, t, on_assign=on_assign, on_ack=on_ack) for t in farm.tokens]
    tasks = [asyncio.create_task(a.run()) for a in fleet]
    try:
        await asyncio.wait_for(asyncio.gather(*(a.ready.wait() for a in fleet)), 60)
        async with farm.api() as client:
            tail = min(2000, backlog // 5)
            await farm.submit(client, backlog - tail, steps=128)
            filled = time.perf_counter()
            await farm.submit(client, tail, steps=128)
            rate = tail / (time.perf_counter() - filled) if tail else 0.0
            health = (await client.get("/healthz")).json()
            assert health["queued"] == backlog and health["agents"] == agents, health
            latencies = []
            for _ in range(probes):
                started = time.perf_counter()
                response = await client.post("/api/v1/jobs", json={"prompt": "probe", "steps": 4})
                job = response.json()["jobs"][0]["id"]
                done = acked.setdefault(job, asyncio.Event())
                await asyncio.wait_for(done.wait(), 30)
                latencies.append((assigned[job] - started) * 1000)
        return {
            "p50": percentile(latencies, 50),
            "p90": percentile(latencies, 90),
            "p99": percentile(latencies, 99),
            "max": max(latencies),
            "probes": probes,
            "submit_rate": rate,
            "rss_mib": farm.rss_bytes() / 2**20,
        }
    finally:
        await cancel_all(tasks)
        farm.stop()


def render(stats: dict[str, float], args: argparse.Namespace, command: str) -> str:
    verdict = "met" if stats["p99"] < TARGET_P99_MS else "**missed**"
    return (
        f"Command: `{command}` ({machine()}).\n\n"
        f"{args.agents} connected idle agents, {args.backlog} queued jobs that no agent can "
        f"take (every pass plans over them), {args.probes} probe jobs submitted one at a "
        "time; submit (POST /api/v1/jobs) → `assign` received by the agent.\n\n"
        "| p50 | p90 | p99 | max | target p99 | submissions at the end of the fill | RSS |\n"
        "|---:|---:|---:|---:|---:|---:|---:|\n"
        f"| {stats['p50']:.1f} ms | {stats['p90']:.1f} ms | {stats['p99']:.1f} ms "
        f"| {stats['max']:.1f} ms | < {TARGET_P99_MS:g} ms ({verdict}) "
        f"| {stats['submit_rate']:.0f} jobs/s | {stats['rss_mib']:.0f} MiB |\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--backlog", type=int, default=1000)
    parser.add_argument("--probes", type=int, default=300)
    parser.add_argument("--write-docs", action="store_true", help=f"rewrite '{SECTION}' part")
    args = parser.parse_args(argv)
    raise_fd_limit()
    stats = asyncio.run(run(args.agents, args.backlog, args.probes))
    command = " ".join(["python -m bench.dispatch", *[a for a in argv if a != "--write-docs"]])
    body = render(stats, args, command)
    print(body, end="")
    if args.write_docs:
        write_section(SECTION, body, "Dispatch latency")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
