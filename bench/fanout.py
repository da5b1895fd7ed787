"""Progress fan-out: progress messages/s from agents relayed to browsers watching over SSE.

    python -m bench.fanout                 # 20 agents x 1 running job, 5 viewers per job, 15 s
    python -m bench.fanout --write-docs    # also rewrite its section of docs/benchmarks.md

Each in-process agent holds one job and sends ``progress`` for it as fast as its
socket takes them; each job page has several SSE viewers (one logged-in
session). Every relayed message marks the job changed; a viewer re-renders the
status partial once per burst (the hub coalesces), so browsers see fewer events
than agents send, never stale ones.
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
    raise_fd_limit,
    start_farm,
    watch,
    write_section,
)

SECTION = "Progress fan-out"


async def run(agents: int, viewers: int, seconds: float, rate: float) -> dict[str, float]:
    # The viewers share one session and address, standing in for many users: lift
    # the stream caps (docs/security.md, "Users and visitors") to measure the streams.
    caps = {
        f"streams_{k}": agents * viewers + 10
        for k in ("per_session", "per_user", "per_address", "max")
    }
    farm = await start_farm(agents, heartbeat_s=10, lease_s=120, **caps)
    fleet = [BenchAgent(farm.ws, t, hold=True) for t in farm.tokens]
    tasks = [asyncio.create_task(a.run()) for a in fleet]
    seen = [0]
    try:
        await asyncio.wait_for(asyncio.gather(*(a.ready.wait() for a in fleet)), 60)
        async with farm.api() as client:
            jobs = await farm.submit(client, agents)
        async with asyncio.timeout(60):
            while sum(len(a.held) for a in fleet) < agents:  # noqa: ASYNC110 - bench polling
                await asyncio.sleep(0.05)
        browser = await farm.browser(agents * viewers + 10)
        tasks += [asyncio.create_task(watch(browser, job, seen)) for job in jobs
                  for _ in range(viewers)]  # fmt: skip
        async with asyncio.timeout(60):
            while seen[0] < agents * viewers:  # noqa: ASYNC110 - every first render in
                await asyncio.sleep(0.05)
        sent = [0]
        last: dict[str, int] = {}
        stop = time.perf_counter() + seconds

        async def spam(agent: BenchAgent) -> None:
            step = 0
            while time.perf_counter() < stop:
                step = step % 1000 + 1
                sent[0] += await agent.progress(step, 1000)
                # Paced like a GPU reporting steps, or flat out (still letting the
                # viewers in this process read).
                await asyncio.sleep(1 / rate if rate else 0)
            last[agent.held[0][0]] = step

        cpu0, seen0, started = farm.cpu_seconds(), seen[0], time.perf_counter()
        await asyncio.gather(*(spam(a) for a in fleet))
        # Messages in = messages the coordinator has applied: wait until every job's
        # live step (GET /api/v1/jobs) is the last one its agent sent.
        async with farm.api() as client, asyncio.timeout(120):
            while True:
                page = (await client.get("/api/v1/jobs", params={"limit": 100})).json()
                steps = {j["id"]: j["progress"].get("step") for j in page["jobs"]}
                if all(steps.get(job) == step for job, step in last.items()):
                    break
        elapsed = time.perf_counter() - started
        return {
            "in": sent[0] / elapsed,
            "out": (seen[0] - seen0) / elapsed,
            "cpu": (farm.cpu_seconds() - cpu0) / elapsed,
            "streams": agents * viewers,
            "rss_mb": farm.rss_bytes() / 2**20,
        }
    finally:
        await cancel_all(tasks)
        farm.stop()


def render(s: dict[str, float], args: argparse.Namespace, command: str) -> str:
    return (
        f"Command: `{command}` ({machine()}).\n\n"
        f"{args.agents} agents each hold one running job and send `progress` "
        f"{f'{args.rate:g} times a second' if args.rate else 'as fast as they can'} "
        f"for {args.seconds:g} s; {args.viewers} SSE viewers per job "
        f"({s['streams']:.0f} streams). Messages in are counted once the coordinator has "
        "applied them (the API shows each job's last step); events out are `status` renders "
        "received by the viewers.\n\n"
        "| progress messages in | SSE events out | coordinator CPU | RSS |\n"
        "|---:|---:|---:|---:|\n"
        f"| {s['in']:,.0f}/s | {s['out']:,.0f}/s | {s['cpu']:.2f} cores "
        f"| {s['rss_mb']:.0f} MiB |\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--viewers", type=int, default=5, help="SSE viewers per job")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument(
        "--rate", type=float, default=0.0, help="progress messages/s per agent (0: flat out)"
    )
    parser.add_argument("--write-docs", action="store_true", help=f"rewrite '{SECTION}'")
    args = parser.parse_args(argv)
    raise_fd_limit()
    stats = asyncio.run(run(args.agents, args.viewers, args.seconds, args.rate))
    command = " ".join(["python -m bench.fanout", *[a for a in argv if a != "--write-docs"]])
    body = render(stats, args, command)
    print(body, end="")
    if args.write_docs:
        write_section(SECTION, body, "Latest run")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
