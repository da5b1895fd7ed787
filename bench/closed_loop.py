"""Closed-loop API benchmark (issue 15): submit, wait for the result, download it; N jobs.

    python -m bench.closed_loop                          # shapefarm, 10 KiB and 1 MiB
    python -m bench.closed_loop --systems shapefarm,before,celery --rounds 2 --write-docs

C client threads, each with its own :class:`client.Client` (the project's API client:
one keep-alive connection, the standard library's HTTP), each submit one job
(``POST /api/v1/jobs``), wait until it has finished, download its GLB, then submit
the next; W real agent processes
(``python -m agent --model instant:size=S --max-batch 1``) generate in zero time.
Latency runs from just before the submit until the GLB bytes are here; 16 warm-up
jobs are not counted; p50/p99 are nearest-rank. Systems:

- ``shapefarm``: this tree, the client waiting on the push channel (``--wait events``:
  ``GET /api/v1/jobs/{id}/events``; ``wait``: ``?wait=60``; ``poll``: every 50 ms);
- ``before``: the coordinator of another tree (``--before-root``, e.g. an export of the
  commit before this work) with the same agents, the client polling every 50 ms as
  clients had to;
- ``celery``: ``../shared/peers/celery_peer.py`` (Celery + Redis, same workload);
- ``gradio``: ``../shared/peers/gradio_peer.py`` (Gradio's queue, one gradio_client per
  client thread, the result file downloaded; same workload).

The peers run under ``--peers-python``, a virtualenv of their own outside the project
(celery and redis, or gradio and gradio_client; redis-server on PATH for celery):
``bench/peers.py`` says before the first run what one lacks.

Systems and sizes run interleaved, round after round, so that ratios compare
adjacent runs on this shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from bench import peers
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
from client import Client

SECTION = "Closed loop (API, issue 15)"
SYSTEMS = ("shapefarm", "before", *peers.KNOWN)
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


def _one(client: Client, i: int, wait: str) -> float:
    started = time.perf_counter()
    job = client.submit(f"bench {i}", steps=4)[0]["id"]
    if wait == "events":
        state = client.wait(job, timeout=120)["state"]
    else:
        while (state := client.job(job, wait=60 if wait == "wait" else 0)["state"]) not in FINAL:
            if wait == "poll":
                time.sleep(0.05)
    if state != "succeeded":
        raise RuntimeError(f"job {job} ended {state}")
    if client.download(job)[:4] != b"glTF":
        raise RuntimeError(f"job {job}: the download is not a GLB")
    return time.perf_counter() - started


def _load(http: str, key: str, n: int, clients: int, wait: str) -> list[float]:
    """``n`` jobs over ``clients`` threads, each with its own client; their latencies."""
    counter = iter(range(n))
    lock = threading.Lock()
    latencies: list[float] = []
    failures: list[BaseException] = []

    def worker() -> None:
        with Client(http, key, timeout=120) as client:
            while not failures:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                try:
                    latencies.append(_one(client, i, wait))
                except Exception as exc:
                    failures.append(exc)

    threads = [threading.Thread(target=worker, name=f"client-{c}") for c in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return latencies


async def run_shapefarm(
    root: Path, args: argparse.Namespace, size: int, wait: str
) -> dict[str, Any]:
    coordinator = Coordinator(root, args.workers, size)
    try:
        await coordinator.start()
        # Both agents connected and idle: a warm-up job each would wait for them anyway.
        await asyncio.to_thread(
            _load, coordinator.http, coordinator.key, args.warmup, args.clients, wait
        )
        cpu0 = coordinator.cpu()
        client0 = time.process_time()
        started = time.perf_counter()
        lats = await asyncio.to_thread(
            _load, coordinator.http, coordinator.key, args.n, args.clients, wait
        )
        wall = time.perf_counter() - started
        cpu1 = coordinator.cpu()
        client_cpu = time.process_time() - client0
    finally:
        coordinator.stop()
    mib = args.n * size / 2**20
    return {
        "jobs_per_s": args.n / wall,
        "p50_ms": 1000 * percentile(lats, 50),
        "p99_ms": 1000 * percentile(lats, 99),
        "coord_cpu_ms_per_job": 1000 * (cpu1[0] - cpu0[0]) / args.n,
        "agent_cpu_ms_per_mib": 1000 * (cpu1[1] - cpu0[1]) / mib,
        "client_cpu_s": client_cpu,
        "n": args.n,
        "wall_s": wall,
    }


def _label(size: int) -> str:
    return "10 KiB" if size == 10240 else f"{size / 2**20:g} MiB" if size >= 2**20 else f"{size} B"


def _row(round_: int, system: str, size: int, r: dict[str, Any]) -> str:
    label = _label(size)
    if "coord_cpu_ms_per_job" in r:
        cpu = f"{r['coord_cpu_ms_per_job']:.1f} ms"
    elif "server_cpu_s" in r:  # a peer's server processes (its JSON rounds to 0.1 s)
        cpu = f"({1000 * r['server_cpu_s'] / r['n']:.1f} ms)"
    else:
        cpu = "—"
    agent = f"{r['agent_cpu_ms_per_mib']:.1f} ms" if "agent_cpu_ms_per_mib" in r else "—"
    load = "{:.1f} → {:.1f}".format(*r["load"]) if "load" in r else "—"
    client = f"{1000 * r['client_cpu_s'] / r['n']:.1f} ms" if "client_cpu_s" in r else "—"
    return (
        f"| {round_} | {system} | {label} | {r['jobs_per_s']:.1f} | {r['p50_ms']:.0f} ms "
        f"| {r['p99_ms']:.0f} ms | {cpu} | {agent} | {client} | {load} |"
    )


def _positive_ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"each value must be at least 1: {text!r}")
    return values


def _positive(text: str) -> int:
    values = _positive_ints(text)
    if len(values) != 1:
        raise argparse.ArgumentTypeError(f"one integer, not {text!r}")
    return values[0]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line, checked before anything runs (systems, numbers, the peers)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-n", type=_positive, default=500)
    parser.add_argument("-c", "--clients", type=_positive, default=8)
    parser.add_argument("-w", "--workers", type=_positive, default=2)
    parser.add_argument("--warmup", type=_positive, default=16)
    parser.add_argument("--sizes", type=_positive_ints, default=[10240, 1048576])
    parser.add_argument("--systems", default="shapefarm", help=",".join(SYSTEMS))
    parser.add_argument("--wait", choices=("events", "wait", "poll"), default="events")
    parser.add_argument("--rounds", type=_positive, default=1)
    parser.add_argument("--before-root", type=Path, default=Path("/tmp/sf-before"))
    parser.add_argument("--peers-python", default="/tmp/peers-venv/bin/python",
                        help="a Python outside the project with the peers' packages")  # fmt: skip
    parser.add_argument("--peers-dir", type=Path, default=peers.PEERS)
    parser.add_argument("--peer-timeout", type=_positive, default=900, help="seconds per peer run")
    parser.add_argument("--write-docs", action="store_true", help=f"rewrite '{SECTION}'")
    args = parser.parse_args(argv)
    args.systems = args.systems.split(",")
    unknown = [s for s in args.systems if s not in SYSTEMS]
    if unknown:
        parser.error(
            f"unknown system(s) {', '.join(map(repr, unknown))}; known: {', '.join(SYSTEMS)}"
        )
    if "before" in args.systems and not (args.before_root / "coordinator").is_dir():
        parser.error(f"--before-root {args.before_root} holds no coordinator/ (for 'before')")
    try:
        peers.check(args.systems, args.peers_python, args.peers_dir)
    except peers.PeerError as exc:
        parser.error(str(exc))
    return args


def run_one(system: str, args: argparse.Namespace, size: int) -> tuple[str, dict[str, Any]]:
    """One system at one size: its row name and figures."""
    if system == "shapefarm":
        return f"shapefarm ({args.wait})", asyncio.run(run_shapefarm(ROOT, args, size, args.wait))
    if system == "before":
        r = asyncio.run(run_shapefarm(args.before_root, args, size, "poll"))
        return "shapefarm before (poll 50 ms)", r
    opts = {"n": args.n, "clients": args.clients, "workers": args.workers,
            "warmup": args.warmup, "size": size}  # fmt: skip
    r = peers.run(system, args.peers_python, args.peers_dir, opts, args.peer_timeout)
    return peers.KNOWN[system].label, r


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    raise_fd_limit()
    sizes, systems = args.sizes, args.systems
    rows: list[str] = []
    results: dict[tuple[str, int], list[dict[str, Any]]] = {}
    versions: dict[str, str] = {}
    for round_ in range(args.rounds):
        for size in sizes:
            for system in systems:
                load = os.getloadavg()[0]  # the machine is shared: note its load per run
                try:
                    name, r = run_one(system, args, size)
                except peers.PeerError as exc:
                    raise SystemExit(f"closed_loop: {exc}") from exc
                r["load"] = (load, os.getloadavg()[0])
                versions.update(r.get("versions", {}))
                results.setdefault((system, size), []).append(r)
                rows.append(_row(round_ + 1, name, size, r))
                print(rows[-1], flush=True)
    header = (
        "| round | system | result | jobs/s | p50 | p99 | coordinator (peer server) CPU/job "
        "| agent CPU/MiB | client CPU/job | load (1 min) before → after |\n"
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    command = " ".join(["python -m bench.closed_loop", *[a for a in argv if a != "--write-docs"]])
    body = (
        f"Command: `{command}` ({machine()}).\n\n"
        f"N={args.n} jobs, C={args.clients} clients, W={args.workers} agent processes "
        "(`instant:size=S`, zero-time), each client: submit, wait, download the GLB; "
        "runs in the order listed (interleaved)."
        + (
            " Peers: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) + "."
            if versions
            else ""
        )
        + "\n\n"
        + header
        + "\n".join(rows)
        + "\n"
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
    """shapefarm against each other system, per size: each round's adjacent runs, and the
    median of those ratios (not a ratio of medians taken from different rounds)."""
    lines = []
    for other in (s for s in systems if s != "shapefarm"):
        for size in sizes:
            ours, theirs = results.get(("shapefarm", size), []), results.get((other, size), [])
            pairs = list(zip(ours, theirs, strict=False))  # round by round
            if not pairs:
                continue
            rate = _series([a["jobs_per_s"] / b["jobs_per_s"] for a, b in pairs])
            p99 = _series([a["p99_ms"] / b["p99_ms"] for a, b in pairs])
            lines.append(f"- {_label(size)} vs {other}: jobs/s {rate}; p99 {p99}")
    return (
        "Ratios of adjacent runs (shapefarm ÷ other), round by round:\n\n" + "\n".join(lines) + "\n"
        if lines
        else ""
    )


def _series(ratios: list[float]) -> str:
    text = "×" + ", ".join(f"{r:.2f}" for r in ratios)
    return f"{text} (median ×{statistics.median(ratios):.2f})" if len(ratios) > 1 else text


if __name__ == "__main__":
    raise SystemExit(main())
