"""End-to-end throughput: jobs/s from submission to stored result, zero-time generator.

    python -m bench.throughput                # 8 agents, 2000 jobs
    python -m bench.throughput --write-docs   # also rewrite its part of docs/benchmarks.md

In-process agents answer every ``assign`` at once with the instant generator's
736-byte GLB (``accepted``, ``result`` header, one chunk). The clock runs from
the first submission until every job's ``result_ack`` says ``stored``; the
coordinator (its own process) does everything it does for a real job: admission,
dispatch, leases, the GLB check, the atomic file write, the database commit.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence

from bench.common import BenchAgent, cancel_all, machine, raise_fd_limit, start_farm, write_section
from protocol import ResultAck

SECTION = "Dispatch and throughput"
TARGET = 300.0


async def run(agents: int, jobs: int) -> dict[str, float]:
    farm = await start_farm(agents, heartbeat_s=10, lease_s=120)
    stored = 0
    rejected = 0
    finished = asyncio.Event()

    def on_ack(message: ResultAck, now: float) -> None:
        nonlocal stored, rejected
        if message.status == "stored":
            stored += 1
        else:
            rejected += 1
        if stored + rejected >= jobs:
            finished.set()

    fleet = [BenchAgent(farm.ws, t, on_ack=on_ack) for t in farm.tokens]
    tasks = [asyncio.create_task(a.run()) for a in fleet]
    try:
        await asyncio.wait_for(asyncio.gather(*(a.ready.wait() for a in fleet)), 60)
        cpu0 = farm.cpu_seconds()
        started = time.perf_counter()
        async with farm.api() as client:
            await farm.submit(client, jobs)
            submitted = time.perf_counter() - started
            await asyncio.wait_for(finished.wait(), 600)
        elapsed = time.perf_counter() - started
        cpu = farm.cpu_seconds() - cpu0
        return {
            "jobs": jobs,
            "stored": stored,
            "rejected": rejected,
            "seconds": elapsed,
            "submit_s": submitted,
            "rate": stored / elapsed,
            "cpu_per_job_ms": cpu / jobs * 1000,
            "cpu_share": cpu / elapsed,
            "rss_mb": farm.rss_bytes() / 2**20,
        }
    finally:
        await cancel_all(tasks)
        farm.stop()


def render(s: dict[str, float], args: argparse.Namespace, command: str) -> str:
    verdict = "met" if s["rate"] >= TARGET else "**missed**"
    return (
        f"Command: `{command}` ({machine()}).\n\n"
        f"{args.jobs} jobs submitted 16 per request to {args.agents} in-process agents with "
        "a zero-time generator (736-byte GLB); clock from the first submission to the last "
        "`result_ack`. Coordinator CPU is read from /proc (1.0 = one core busy).\n\n"
        "| jobs stored | wall time | jobs/s | target | coordinator CPU per job "
        "| coordinator CPU use | RSS after |\n|---:|---:|---:|---:|---:|---:|---:|\n"
        f"| {s['stored']:.0f} of {s['jobs']:.0f} | {s['seconds']:.1f} s | {s['rate']:.0f} "
        f"| >= {TARGET:.0f} ({verdict}) | {s['cpu_per_job_ms']:.2f} ms | {s['cpu_share']:.2f} "
        f"| {s['rss_mb']:.0f} MiB |\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--write-docs", action="store_true", help=f"rewrite '{SECTION}' part")
    args = parser.parse_args(argv)
    raise_fd_limit()
    stats = asyncio.run(run(args.agents, args.jobs))
    command = " ".join(["python -m bench.throughput", *[a for a in argv if a != "--write-docs"]])
    body = render(stats, args, command)
    print(body, end="")
    if args.write_docs:
        write_section(SECTION, body, "Throughput")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
