"""Closed-loop API benchmark (issue 15): submit, wait for the result, download it; N jobs.

    python -m bench.closed_loop                          # shapefarm, 10 KiB and 1 MiB
    python -m bench.closed_loop --systems shapefarm,before,celery --rounds 2 --write-docs

C client tasks each submit one job (``POST /api/v1/jobs``), wait until it has
finished, download its GLB, then submit the next; W real agent processes
(``python -m agent --model instant:size=S --max-batch 1``) generate in zero time.
Latency runs from just before the submit until the GLB bytes are here; 16 warm-up
jobs are not counted; p50/p99 are nearest-rank. Systems:

- ``shapefarm``: this tree, the client waiting on the push channel (``--wait events``:
  ``GET /api/v1/jobs/{id}/events``; ``wait``: ``?wait=60``; ``poll``: every 50 ms);
- ``before``: the coordinator of another tree (``--before-root``, e.g. an export of the
  commit before this work) with the same agents, the client polling every 50 ms as
  clients had to;
- ``celery``: ``/work/shared/peers/celery_peer.py`` (Celery + Redis, same workload), run
  with ``--peers-python`` if that interpreter has celery and redis-server exists.

Systems and sizes run interleaved, round after round, so that ratios compare
adjacent runs on this shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    PASSWORD,
    ROOT,
    TIERS,
    free_port,
    machine,
    percentile,
    raise_fd_limit,
    write_section,
)

SECTION = "Closed loop (API, issue 15)"
PEERS = Path("/work/shared/peers")
FINAL = {"succeeded", "failed", "cancelled"}


def _proc_cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_admin(root: Path, data: Path, *args: str, stdin: str | None = None) -> None:
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, "-m", "coordinator.cli", "admin", "--data-dir", str(data), *args],
        input=stdin, text=True, cwd=root, env=env, capture_output=True, timeout=120,
    )  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"admin {' '.join(args)}: {done.stderr.strip()}")


class Coordinator:
    """A coordinator process from ``root`` with one admin user, its key and W agents."""

    def __init__(self, root: Path, workers: int, size: int) -> None:
        self.root, self.workers, self.size = root, workers, size
        self.data = Path(tempfile.mkdtemp(prefix="shapefarm-loop-"))
        self.port = free_port()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.key = ""

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        (self.data / "tiers.toml").write_text(TIERS)
        run_admin(self.root, self.data, "create-admin", "loop", "--password-stdin", stdin=PASSWORD)
        run_admin(self.root, self.data, "api-key", "loop", "--key-file", str(self.data / "key"))
        self.key = (self.data / "key").read_text().strip()
        env = {
            **os.environ,
            "PYTHONPATH": str(self.root),
            "SHAPEFARM_TIERS_FILE": str(self.data / "tiers.toml"),
            # One user stands in for C clients: lift the per-user stream cap.
            "SHAPEFARM_STREAMS_PER_USER": "256",
            "SHAPEFARM_STREAMS_PER_ADDRESS": "256",
        }
        argv = [sys.executable, "-m", "coordinator.cli", "coordinator", "--data-dir",
                str(self.data), "--port", str(self.port), "--log-level", "warning"]  # fmt: skip
        if os.environ.get("BENCH_PROFILE"):  # cProfile the coordinator into that file
            argv[1:3] = [os.environ.get("BENCH_PROFILE_RUNNER", "/tmp/profiled_coord.py")]
        self.procs.append(subprocess.Popen(argv, cwd=self.root, env=env))  # noqa: ASYNC220
        async with httpx.AsyncClient() as client:
            for _ in range(600):
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(f"{self.http}/healthz")).status_code == 200:
                        break
                await asyncio.sleep(0.05)
        agent_env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for i in range(self.workers):
            token = self.data / f"token-{i}"
            run_admin(self.root, self.data, "issue-token", "loop", "--name", f"w{i}",
                 "--token-file", str(token))  # fmt: skip
            self.procs.append(subprocess.Popen(  # noqa: ASYNC220
                [sys.executable, "-m", "agent", "--url", f"ws://127.0.0.1:{self.port}/agent/ws",
                 "--token-file", str(token), "--model", f"instant:size={self.size}",
                 "--device", "cpu", "--max-batch", "1", "--spool-dir", str(self.data / f"spool{i}"),
                 "--log-level", "warning"], cwd=ROOT, env=agent_env))  # fmt: skip

    def cpu(self) -> tuple[float, float]:
        """(coordinator, agents) CPU seconds so far."""
        return _proc_cpu_s(self.procs[0].pid), sum(_proc_cpu_s(p.pid) for p in self.procs[1:])

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.data, ignore_errors=True)


async def _finished(client: httpx.AsyncClient, job: str, wait: str) -> None:
    if wait == "events":
        async with client.stream("GET", f"/api/v1/jobs/{job}/events") as stream:
            stream.raise_for_status()
            async for line in stream.aiter_lines():
                if line == "event: finished":
                    return
        raise RuntimeError(f"job {job}: the event stream ended without 'finished'")
    while True:
        query = "?wait=60" if wait == "wait" else ""
        answer = await client.get(f"/api/v1/jobs/{job}{query}")
        answer.raise_for_status()
        if answer.json()["state"] in FINAL:
            return
        if wait == "poll":
            await asyncio.sleep(0.05)


async def _one(client: httpx.AsyncClient, i: int, wait: str) -> float:
    started = time.perf_counter()
    answer = await client.post("/api/v1/jobs", json={"prompt": f"bench {i}", "steps": 4})
    answer.raise_for_status()
    job = answer.json()["jobs"][0]["id"]
    await _finished(client, job, wait)
    glb = await client.get(f"/api/v1/jobs/{job}/download/glb")
    glb.raise_for_status()
    if glb.content[:4] != b"glTF":
        raise RuntimeError(f"job {job}: the download is not a GLB")
    return time.perf_counter() - started


async def _load(http: str, key: str, n: int, clients: int, warmup: int, wait: str) -> list[float]:
    limits = httpx.Limits(max_connections=clients * 2, max_keepalive_connections=clients * 2)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=http, headers=headers, timeout=120, limits=limits) as c:
        for batch in range(0, warmup, clients):
            await asyncio.gather(*(_one(c, i, wait) for i in range(batch, batch + clients)))
        counter = iter(range(n))
        latencies: list[float] = []

        async def worker() -> None:
            for i in counter:
                latencies.append(await _one(c, i, wait))

        await asyncio.gather(*(worker() for _ in range(clients)))
        return latencies


async def run_shapefarm(
    root: Path, args: argparse.Namespace, size: int, wait: str
) -> dict[str, Any]:
    coordinator = Coordinator(root, args.workers, size)
    try:
        await coordinator.start()
        # Both agents connected and idle: a warm-up job each would wait for them anyway.
        client_cpu0 = time.process_time()
        await _load(coordinator.http, coordinator.key, 0, args.clients, args.warmup, wait)
        cpu0 = coordinator.cpu()
        client0 = time.process_time()
        started = time.perf_counter()
        lats = await _load(coordinator.http, coordinator.key, args.n, args.clients, 0, wait)
        wall = time.perf_counter() - started
        cpu1 = coordinator.cpu()
        del client_cpu0
    finally:
        coordinator.stop()
    mib = args.n * size / 2**20
    return {
        "jobs_per_s": args.n / wall,
        "p50_ms": 1000 * percentile(lats, 50),
        "p99_ms": 1000 * percentile(lats, 99),
        "coord_cpu_ms_per_job": 1000 * (cpu1[0] - cpu0[0]) / args.n,
        "agent_cpu_ms_per_mib": 1000 * (cpu1[1] - cpu0[1]) / mib,
        "client_cpu_s": time.process_time() - client0,
        "wall_s": wall,
    }


def run_celery(args: argparse.Namespace, size: int) -> dict[str, Any]:
    env = {**os.environ, "PEER_SIZE": str(size), "PEER_REDIS_PORT": str(free_port())}
    out = subprocess.run(
        [args.peers_python, str(PEERS / "celery_peer.py"), "-n", str(args.n),
         "-c", str(args.clients), "-w", str(args.workers)],
        env=env, capture_output=True, text=True, timeout=600, cwd=PEERS,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    if "error" in result:
        raise RuntimeError(f"celery peer: {result['error']}")
    return result


def _row(system: str, size: int, r: dict[str, Any]) -> str:
    label = "10 KiB" if size == 10240 else f"{size / 2**20:g} MiB" if size >= 2**20 else f"{size} B"
    cpu = f"{r['coord_cpu_ms_per_job']:.1f} ms" if "coord_cpu_ms_per_job" in r else "—"
    agent = f"{r['agent_cpu_ms_per_mib']:.1f} ms" if "agent_cpu_ms_per_mib" in r else "—"
    load = "{:.1f} → {:.1f}".format(*r["load"]) if "load" in r else "—"
    return (
        f"| {system} | {label} | {r['jobs_per_s']:.1f} | {r['p50_ms']:.0f} ms "
        f"| {r['p99_ms']:.0f} ms | {cpu} | {agent} | {load} |"
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=500)
    parser.add_argument("-c", "--clients", type=int, default=8)
    parser.add_argument("-w", "--workers", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=16)
    parser.add_argument("--sizes", default="10240,1048576")
    parser.add_argument("--systems", default="shapefarm", help="shapefarm,before,celery")
    parser.add_argument("--wait", choices=("events", "wait", "poll"), default="events")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--before-root", type=Path, default=Path("/tmp/sf-before"))
    parser.add_argument("--peers-python", default="/tmp/peers-venv/bin/python")
    parser.add_argument("--write-docs", action="store_true", help=f"rewrite '{SECTION}'")
    args = parser.parse_args(argv)
    raise_fd_limit()
    sizes = [int(s) for s in args.sizes.split(",")]
    systems = args.systems.split(",")
    rows: list[str] = []
    results: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for round_ in range(args.rounds):
        for size in sizes:
            for system in systems:
                load = os.getloadavg()[0]  # the machine is shared: note its load per run
                if system == "shapefarm":
                    r = asyncio.run(run_shapefarm(ROOT, args, size, args.wait))
                    name = f"shapefarm ({args.wait})"
                elif system == "before":
                    r = asyncio.run(run_shapefarm(args.before_root, args, size, "poll"))
                    name = "shapefarm before (poll 50 ms)"
                elif system == "celery":
                    r = run_celery(args, size)
                    name = "Celery + Redis"
                else:
                    raise SystemExit(f"unknown system {system!r}")
                r["load"] = (load, os.getloadavg()[0])
                results.setdefault((system, size), []).append(r)
                rows.append(_row(name, size, r))
                print(f"round {round_ + 1}: {rows[-1]}", flush=True)
    header = (
        "| system | result | jobs/s | p50 | p99 | coordinator CPU/job | agent CPU/MiB "
        "| load (1 min) before → after |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|\n"
    )
    command = " ".join(["python -m bench.closed_loop", *[a for a in argv if a != "--write-docs"]])
    body = (
        f"Command: `{command}` ({machine()}).\n\n"
        f"N={args.n} jobs, C={args.clients} clients, W={args.workers} agent processes "
        "(`instant:size=S`, zero-time), each client: submit, wait, download the GLB; "
        "runs in the order listed (interleaved).\n\n" + header + "\n".join(rows) + "\n"
    )
    ratios = _ratios(results, sizes, systems)
    if ratios:
        body += "\n" + ratios
    print(body, end="")
    if args.write_docs:
        write_section(SECTION, body, "Latest run")
    return 0


def _ratios(results: dict[tuple[str, int], list[dict[str, Any]]], sizes: list[int],
            systems: list[str]) -> str:  # fmt: skip
    """shapefarm against each other system, per size: medians of the adjacent runs."""
    lines = []
    for other in (s for s in systems if s != "shapefarm"):
        for size in sizes:
            ours, theirs = results.get(("shapefarm", size)), results.get((other, size))
            if not ours or not theirs:
                continue

            def med(rs: list[dict[str, Any]], k: str) -> float:
                return float(sorted(r[k] for r in rs)[len(rs) // 2])

            rate = med(ours, "jobs_per_s") / med(theirs, "jobs_per_s")
            p99 = med(ours, "p99_ms") / med(theirs, "p99_ms")
            lines.append(f"- {size} B vs {other}: jobs/s ×{rate:.2f}, p99 ×{p99:.2f}")
    return (
        "Ratios (shapefarm ÷ other, medians over rounds):\n\n" + "\n".join(lines) + "\n"
        if lines
        else ""
    )


if __name__ == "__main__":
    raise SystemExit(main())
