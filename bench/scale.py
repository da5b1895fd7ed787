"""Scale: many idle heartbeating agents and many SSE viewers; coordinator RSS and CPU.

    python -m bench.scale                  # 1000 agents, 1000 viewers, 20 s steady state
    python -m bench.scale --write-docs     # also rewrite its section of docs/benchmarks.md

In-process agents connect, get their ``welcome`` and send a heartbeat every
``--heartbeat`` seconds; viewers (one logged-in session) hold SSE streams open
on job pages. Connections open in batches of 50 (each viewer's first render is
awaited), then the coordinator process is measured from /proc over a quiet
window: RSS (VmRSS) and CPU (utime + stime).
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

SECTION = "Scale"
TARGET_GIB = 1.0
BATCH = 50


async def run(agents: int, viewers: int, heartbeat: float, seconds: float) -> dict[str, float]:
    # The viewers share one session and address, standing in for many users: lift
    # the stream caps (docs/security.md, "Users and visitors") to measure the streams.
    caps = {f"streams_{k}": viewers + 10 for k in ("per_session", "per_user", "per_address", "max")}
    farm = await start_farm(agents, heartbeat_s=heartbeat, lease_s=max(60.0, 4 * heartbeat), **caps)
    tasks: list[asyncio.Task[None]] = []
    seen = [0]
    try:
        rss0 = farm.rss_bytes()
        started = time.perf_counter()
        fleet = [BenchAgent(farm.ws, t, hold=True) for t in farm.tokens]
        for i in range(0, agents, BATCH):
            batch = fleet[i : i + BATCH]
            tasks += [asyncio.create_task(a.run(heartbeat_s=heartbeat)) for a in batch]
            await asyncio.wait_for(asyncio.gather(*(a.ready.wait() for a in batch)), 60)
        agents_s = time.perf_counter() - started
        async with farm.api() as client:
            jobs = await farm.submit(client, 10)  # held (never finished) by 10 agents
        browser = await farm.browser(viewers + 10)
        started = time.perf_counter()
        for i in range(0, viewers, BATCH):
            n = min(BATCH, viewers - i)
            tasks += [asyncio.create_task(watch(browser, jobs[(i + k) % len(jobs)], seen))
                      for k in range(n)]  # fmt: skip
            async with asyncio.timeout(120):
                while seen[0] < i + n:  # noqa: ASYNC110 - bench polling
                    await asyncio.sleep(0.02)
        viewers_s = time.perf_counter() - started
        cpu0, t0 = farm.cpu_seconds(), time.perf_counter()
        await asyncio.sleep(seconds)  # the measured steady state
        cpu = (farm.cpu_seconds() - cpu0) / (time.perf_counter() - t0)
        health = (await browser.get("/healthz")).json()
        assert health["agents"] == agents, health
        return {
            "agents": agents, "viewers": viewers, "rss0": rss0 / 2**20,
            "rss": farm.rss_bytes() / 2**20, "cpu": cpu, "agents_s": agents_s,
            "viewers_s": viewers_s, "heartbeat": heartbeat, "seconds": seconds,
        }  # fmt: skip
    finally:
        await cancel_all(tasks)
        farm.stop()


def render(s: dict[str, float], command: str) -> str:
    verdict = "met" if s["rss"] < TARGET_GIB * 1024 else "**missed**"
    return (
        f"Command: `{command}` ({machine()}).\n\n"
        f"{s['agents']:.0f} connected agents heartbeating every {s['heartbeat']:g} s and "
        f"{s['viewers']:.0f} SSE viewers (10 job pages), opened in batches of {BATCH}; "
        f"coordinator measured from /proc over {s['seconds']:g} s of steady state.\n\n"
        "| coordinator RSS idle | RSS loaded | target | CPU (steady) | connect agents "
        "| connect viewers |\n|---:|---:|---:|---:|---:|---:|\n"
        f"| {s['rss0']:.0f} MiB | {s['rss']:.0f} MiB | < 1 GiB ({verdict}) "
        f"| {s['cpu']:.2f} cores | {s['agents_s']:.1f} s | {s['viewers_s']:.1f} s |\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--viewers", type=int, default=1000)
    parser.add_argument("--heartbeat", type=float, default=10.0, help="seconds (default 10)")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--write-docs", action="store_true", help=f"rewrite '{SECTION}'")
    args = parser.parse_args(argv)
    raise_fd_limit()
    stats = asyncio.run(run(args.agents, args.viewers, args.heartbeat, args.seconds))
    command = " ".join(["python -m bench.scale", *[a for a in argv if a != "--write-docs"]])
    body = render(stats, command)
    print(body, end="")
    if args.write_docs:
        write_section(SECTION, body, "Latest run")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
