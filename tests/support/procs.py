"""Coordinator and agent processes for reliability tests, and checks on what they leave."""

from __future__ import annotations

import hashlib
import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

from tests.support.coordinators import ROOT, wait_for

TERMINAL = {"succeeded", "failed", "cancelled"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class CoordinatorProcess:
    """``shapefarm coordinator`` in its own process, so a test can SIGKILL it."""

    data_dir: Path
    port: int
    env: Mapping[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    _log_fh: IO[bytes] | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/agent/ws"

    def spawn(self) -> None:
        self._log_fh = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
        argv = [sys.executable, "-m", "coordinator.cli", "coordinator", "--data-dir",
                str(self.data_dir), "--port", str(self.port), "--log-level", "warning"]  # fmt: skip
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env={**os.environ, **self.env}, stdout=self._log_fh,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    async def start(self) -> None:
        """Spawn the process and wait until it answers ``/healthz``."""
        self.spawn()
        async with httpx.AsyncClient(timeout=2) as client:

            async def healthy() -> bool:
                assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
                try:
                    return (await client.get(f"{self.http}/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_for(healthy, 30, "the coordinator to answer /healthz", interval=0.05)

    def stop(self, kill: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            (self.proc.kill if kill else self.proc.terminate)()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None


def coordinator_env(**settings: object) -> dict[str, str]:
    return {f"SHAPEFARM_{name.upper()}": str(value) for name, value in settings.items()}


@dataclass(frozen=True)
class Ledger:
    """What the database and the blob store say after a run."""

    states: dict[str, str]
    errors: dict[str, str | None]
    results: dict[str, str]  # job id -> stored sha256
    jobs_done: int  # sum of agents' stored-result counters
    files: dict[str, str]  # job id -> sha256 of data_dir/models/**/<id>.glb
    partials: list[Path]


def read_ledger(data_dir: Path) -> Ledger:
    db = sqlite3.connect(data_dir / "shapefarm.db")
    try:
        jobs = db.execute("SELECT id, state, error FROM jobs").fetchall()
        results = dict(db.execute("SELECT job_id, glb_sha256 FROM results").fetchall())
        done = db.execute("SELECT COALESCE(SUM(jobs_done), 0) FROM agents").fetchone()[0]
    finally:
        db.close()
    models = data_dir / "models"
    files = {p.stem: hashlib.sha256(p.read_bytes()).hexdigest() for p in models.glob("*/*.glb")}
    return Ledger(
        states={j: s for j, s, _ in jobs},
        errors={j: e for j, _, e in jobs},
        results=results,
        jobs_done=int(done),
        files=files,
        partials=sorted(models.glob("**/.incoming-*")),
    )


def spooled(spool: Path) -> list[str]:
    """Result entries still waiting in an agent's spool, and anything it quarantined."""
    if not spool.exists():
        return []
    entries = [p.name for p in spool.iterdir() if p.name not in {"tmp", "quarantine"}]
    quarantine = spool / "quarantine"
    if quarantine.exists():
        entries += [f"quarantine/{p.name}" for p in quarantine.iterdir()]
    return sorted(entries)
