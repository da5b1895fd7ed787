"""Start-up with a long queue: coordinator start → /healthz answering, with Q jobs queued.

    python -m bench.startup --queued 50000 --users 50
    python -m bench.startup --queued 50000 --root /tmp/sf-before   # another tree's coordinator

The jobs (4 steps, spread over ``--users`` users) are written straight into the
database of a fresh data dir, as a coordinator stopped with a long queue would
leave it; the clock runs from starting the process until ``/healthz`` answers,
which it does once the farm has loaded the queue. RSS is read after the start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from bench.closed_loop import run_admin
from bench.common import PASSWORD, ROOT, TIERS, free_port, machine, write_section

SECTION = "Queue growth"


def fill(db: Path, queued: int, users: int) -> None:
    conn = sqlite3.connect(db)
    now = time.time()
    with conn:
        first = conn.execute("SELECT max(id) FROM users").fetchone()[0]
        conn.executemany(
            "INSERT INTO users (username, password_hash, is_admin, tier, banned, credit,"
            " created_at) VALUES (?, 'x', 0, 'free', 0, 0, ?)",
            [(f"u{i}", now) for i in range(users)],
        )
        ids = [first + 1 + i for i in range(users)]
        conn.executemany(
            "INSERT INTO jobs (id, user_id, prompt, seed, guidance, steps, model, state, attempt,"
            " attempt_base, priority, public, created_at, enqueued_at)"
            " VALUES (?, ?, 'a queued cube', 1, 15.0, 4, 'shap-e', 'queued', 0, 0, 0, 0, ?, ?)",
            [(f"q{i:08d}", ids[i % users], now, now + i * 1e-6) for i in range(queued)],
        )
    conn.close()


async def run(root: Path, queued: int, users: int) -> dict[str, float]:
    data = Path(tempfile.mkdtemp(prefix="shapefarm-startup-"))
    port = free_port()
    proc: subprocess.Popen[bytes] | None = None
    try:
        (data / "tiers.toml").write_text(TIERS)
        run_admin(root, data, "create-admin", "loop", "--password-stdin", stdin=PASSWORD)
        fill(data / "shapefarm.db", queued, users)
        env = {
            **os.environ,
            "PYTHONPATH": str(root),
            "SHAPEFARM_TIERS_FILE": str(data / "tiers.toml"),
        }
        argv = [sys.executable, "-m", "coordinator.cli", "coordinator", "--data-dir", str(data),
                "--port", str(port), "--log-level", "warning"]  # fmt: skip
        started = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=root, env=env)  # noqa: ASYNC220
        async with httpx.AsyncClient() as client:
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                        break
                if proc.poll() is not None:
                    raise RuntimeError("the coordinator exited")
                await asyncio.sleep(0.02)
        seconds = time.perf_counter() - started
        rss = 0
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():  # noqa: ASYNC240
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
        return {"seconds": seconds, "rss_mb": rss / 2**20}
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(30)
        shutil.rmtree(data, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queued", type=int, default=50_000)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--root", type=Path, default=ROOT, help="tree whose coordinator runs")
    parser.add_argument("--before-root", type=Path, default=None, help="also run this tree, after")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    rows = []
    for label, root in (("this tree", args.root), ("before", args.before_root)):
        if root is None:
            continue
        r = asyncio.run(run(root, args.queued, args.users))
        rows.append(f"| {label} | {args.queued} | {r['seconds']:.2f} s | {r['rss_mb']:.0f} MiB |")
        print(rows[-1], flush=True)
    command = " ".join(["python -m bench.startup", *[a for a in argv if a != "--write-docs"]])
    body = (
        f"Command: `{command}` ({machine()}).\n\n"
        f"{args.queued} queued jobs of {args.users} users in the database; coordinator start "
        "until `/healthz` answers.\n\n| coordinator | queued | start-up | RSS after |\n"
        "|---|---:|---:|---:|\n" + "\n".join(rows) + "\n"
    )
    print(body, end="")
    if args.write_docs:
        write_section(SECTION, body, "Start-up")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
