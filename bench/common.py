"""Shared pieces of the load benchmarks: a coordinator process, in-process agents, docs.

The coordinator always runs as its own process (``shapefarm coordinator``), so
its RSS and CPU can be read from /proc and the load generators in this process
do not share its event loop. Agents here are light in-process WebSocket
clients speaking the real protocol (``protocol`` package) with the instant
generator's GLB; they cost far less than agent processes, so one benchmark
process can run hundreds of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from agent.compression import client_extensions
from agent.instant import tetrahedron_glb
from protocol import (
    Accepted,
    Assign,
    Capabilities,
    Hello,
    Progress,
    Result,
    ResultAck,
    decode_from_coordinator,
    describe,
    encode,
    iter_chunks,
)

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "a long bench password 1"
DOCS = ROOT / "docs" / "benchmarks.md"
# One tier with room for everything: the benchmarks measure the machinery, not quotas.
TIERS = """
[tiers.free]
rank = 0
weight = 1.0
daily_quota = 10000000
max_concurrent = 100000
max_steps = 256  # protocol.limits.MAX_STEPS: a tier above it stops the coordinator
max_variants = 16
max_guidance = 50.0
max_queued = 1000000
"""


async def cancel_all(tasks: Sequence[asyncio.Task[Any]]) -> None:
    """Cancel background tasks and wait for them; their errors no longer matter."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def machine() -> str:
    # The load average says how much else ran on the machine (shared CI/dev boxes).
    load = os.getloadavg()[0]
    return (
        f"CPython {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {load:.1f} at the end"
    )


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


@dataclass
class Farm:
    """A coordinator process with one user, its API key and ``agents`` agent tokens."""

    data_dir: Path
    port: int
    api_key: str = ""
    tokens: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/agent/ws"

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        fields_ = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields_[11]) + int(fields_[12])) / os.sysconf("SC_CLK_TCK")

    def rss_bytes(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def api(self, **limits: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.http, timeout=60, headers={"Authorization": f"Bearer {self.api_key}"},
            limits=httpx.Limits(**limits) if limits else httpx.Limits(),
        )  # fmt: skip

    async def submit(self, client: httpx.AsyncClient, count: int, **fields_: Any) -> list[str]:
        """Queue ``count`` jobs, 16 variants per request."""
        ids: list[str] = []
        while len(ids) < count:
            n = min(16, count - len(ids))
            body = {"prompt": "a bench cube", "steps": 4, "variants": n, **fields_}
            response = await client.post("/api/v1/jobs", json=body)
            response.raise_for_status()
            ids += [job["id"] for job in response.json()["jobs"]]
        return ids

    async def browser(self, connections: int = 100, username: str = "bench") -> httpx.AsyncClient:
        """A logged-in browser session (cookie), able to hold ``connections`` streams."""
        client = httpx.AsyncClient(
            base_url=self.http, timeout=httpx.Timeout(60, read=None),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=0),
        )  # fmt: skip
        page = await client.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert token, "no CSRF token on /login"
        form = {"csrf_token": token.group(1), "username": username, "password": PASSWORD}
        response = await client.post("/login", data=form)
        assert response.status_code == 303, response.status_code
        return client

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.data_dir, ignore_errors=True)


async def start_farm(agents: int, **settings: object) -> Farm:
    """Provision a fresh data dir, then start the coordinator and wait for /healthz."""
    from coordinator.cli.admin_cli import admin_db, create_api_key, create_user
    from coordinator.services.enrollment import enroll
    from coordinator.settings import load_settings
    from coordinator.store import models

    data = Path(tempfile.mkdtemp(prefix="shapefarm-bench-"))
    (data / "tiers.toml").write_text(TIERS)
    farm = Farm(data, free_port())
    cfg = load_settings({"data_dir": data}, environ={})
    await create_user(cfg, "bench", PASSWORD, None, is_admin=False)
    farm.api_key = await create_api_key(cfg, "bench", "bench")
    async with admin_db(cfg) as db:
        from sqlalchemy import select

        owner = await db.scalar(select(models.User).where(models.User.username == "bench"))
        assert owner is not None
        for i in range(agents):
            farm.tokens.append((await enroll(db, owner, f"bench {i}", time.time(), True))[1])
        await db.commit()
    env = {**os.environ, "SHAPEFARM_TIERS_FILE": str(data / "tiers.toml")}
    env.update({f"SHAPEFARM_{k.upper()}": str(v) for k, v in settings.items()})
    argv = [sys.executable, "-m", "coordinator.cli", "coordinator", "--data-dir", str(data),
            "--port", str(farm.port), "--log-level", "warning"]  # fmt: skip
    farm.proc = _spawn(argv, env)
    async with httpx.AsyncClient() as client:
        for _ in range(600):
            try:
                if (await client.get(f"{farm.http}/healthz")).status_code == 200:
                    return farm
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    farm.stop()
    raise RuntimeError("the coordinator did not start")


def _spawn(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, cwd=ROOT, env=env)


class BenchAgent:
    """One in-process agent: answers assignments with a GLB, or holds them (``hold``)."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        hold: bool = False,
        on_assign: Callable[[Assign, float], None] | None = None,
        on_ack: Callable[[ResultAck, float], None] | None = None,
    ) -> None:
        self.url, self.token, self.hold = url, token, hold
        self.on_assign, self.on_ack = on_assign, on_ack
        self.held: list[tuple[str, int]] = []
        self.ws: ClientConnection | None = None
        self.ready = asyncio.Event()
        self._stream = 0
        self._glb = tetrahedron_glb(1)

    async def run(self, heartbeat_s: float | None = None) -> None:
        # Deflate for control messages only, like the real agent (agent/compression.py).
        async with connect(
            self.url, max_size=2**20, ping_interval=None, compression=None,
            extensions=client_extensions(),
        ) as ws:  # fmt: skip
            self.ws = ws
            caps = Capabilities(max_batch=1, max_steps=64, formats=("glb",))
            await ws.send(encode(Hello(token=self.token, versions=(1,), agent_version="bench",
                                       capabilities=caps)))  # fmt: skip
            decode_from_coordinator(await ws.recv())  # welcome
            self.ready.set()
            beat = asyncio.create_task(self._beat(ws, heartbeat_s)) if heartbeat_s else None
            try:
                async for frame in ws:
                    await self._handle(ws, decode_from_coordinator(frame))
            finally:
                if beat is not None:
                    beat.cancel()

    async def _beat(self, ws: ClientConnection, every_s: float) -> None:
        seq = 0
        while True:
            await asyncio.sleep(every_s)
            seq += 1
            await ws.send(encode_heartbeat(seq))

    async def _handle(self, ws: ClientConnection, message: object) -> None:
        now = time.perf_counter()
        if isinstance(message, Assign):
            if self.on_assign is not None:
                self.on_assign(message, now)
            for spec in message.jobs:
                await ws.send(encode(Accepted(job=spec.job, attempt=spec.attempt)))
                if self.hold:
                    self.held.append((spec.job, spec.attempt))
                else:
                    await self.upload(ws, spec.job, spec.attempt)
        elif isinstance(message, ResultAck) and self.on_ack is not None:
            self.on_ack(message, now)

    async def upload(self, ws: ClientConnection, job: str, attempt: int) -> None:
        self._stream += 1
        artifacts = describe([("glb", self._glb)])
        await ws.send(encode(Result(job=job, attempt=attempt, stream=self._stream,
                                    artifacts=artifacts, vertices=4, faces=4)))  # fmt: skip
        for frame in iter_chunks(self._stream, self._glb, 256 * 1024):
            await ws.send(frame)

    async def progress(self, step: int, total: int) -> int:
        """One progress message for every held job; returns how many were sent."""
        assert self.ws is not None
        for job, attempt in self.held:
            await self.ws.send(encode(Progress(job=job, attempt=attempt, stage="sampling",
                                               step=step, total=total)))  # fmt: skip
        return len(self.held)


async def watch(client: httpx.AsyncClient, job: str, counter: list[int]) -> None:
    """One SSE viewer of a job page; counts ``status`` events into ``counter[0]``."""
    async with client.stream("GET", f"/jobs/{job}/events") as stream:
        async for line in stream.aiter_lines():
            if line == "event: status":
                counter[0] += 1


def encode_heartbeat(seq: int) -> str:
    from protocol import Heartbeat

    return encode(Heartbeat(seq=seq))


def write_section(section: str, body: str, subsection: str | None = None) -> None:
    """Replace ``## section`` (or only its ``### subsection``) in docs/benchmarks.md.

    Everything else, other people's sections included, is left as it is.
    """
    lines = DOCS.read_text().splitlines(keepends=True) if DOCS.exists() else ["# Benchmarks\n"]
    heading = f"## {section}"
    start = next((i for i, line in enumerate(lines) if line.strip() == heading), None)
    if start is None:
        lines += ([] if not lines or not lines[-1].strip() else ["\n"]) + [heading + "\n"]
        start = len(lines) - 1
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].startswith(("# ", "## "))), len(lines)
    )
    body = body.rstrip("\n") + "\n"
    content = lines[start + 1 : end]
    if subsection is None:
        content = ["\n", body]
    else:
        sub = f"### {subsection}"
        s = next((i for i, line in enumerate(content) if line.strip() == sub), None)
        new = [sub + "\n", "\n", body]
        if s is None:
            while content and not content[-1].strip():
                content.pop()
            content = [*content, "\n", *new]
        else:
            e = next(
                (i for i in range(s + 1, len(content)) if content[i].startswith("#")), len(content)
            )
            content = [*content[:s], *new, *(["\n", *content[e:]] if e < len(content) else [])]
    while content and not content[-1].strip():
        content.pop()
    tail = lines[end:]
    DOCS.write_text("".join([*lines[: start + 1], *content, *(["\n"] if tail else []), *tail]))
