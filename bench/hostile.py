"""Hostile load: the coordinator's memory and latency while untrusted parties push on it.

    python -m bench.hostile                 # the whole attack at once, then the report
    python -m bench.hostile --write-docs    # also rewrite its section of docs/benchmarks.md

One coordinator process (as in production: its own process, RSS read from /proc)
is put under, all at the same time:

- 10 agents still pending approval, each announcing a maximum-size result for a job
  that does not exist and streaming its bytes flat out;
- an approved agent answering its assignments with GLB bombs (tiny strides, unused
  accessors, one mesh instanced by thousands of nodes; 3 of each kind), and the owner
  downloading every stored model as OBJ, STL and PLY, several times at once;
- one logged-in user making 1000 event-stream attempts through 100 connections.

Meanwhile /healthz is probed every 20 ms and a second, well-behaved user loads their
history page and the API; every failure of theirs is counted. Targets (security
issue): peak RSS < idle + 300 MB, /healthz p99 < 100 ms, no other user's request
failing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.common import (
    PASSWORD,
    Farm,
    cancel_all,
    machine,
    percentile,
    raise_fd_limit,
    start_farm,
    write_section,
)
from protocol import (
    Accepted,
    Artifact,
    Assign,
    Capabilities,
    Hello,
    Result,
    ResultAck,
    decode_from_coordinator,
    describe,
    encode,
    iter_chunks,
)
from protocol.frames import pack_chunk
from tests.support import glbbombs

SECTION = "Hostile load"
PENDING_AGENTS = 10
BOMBS_PER_KIND = 3
STREAM_ATTEMPTS = 1000
STREAM_CONNECTIONS = 100
DOWNLOADS_AT_ONCE = 3
BOMB_KINDS: dict[str, Callable[[], bytes]] = {
    "stride": glbbombs.stride_bomb,
    "unused accessors": glbbombs.unused_accessor_bomb,
    "instancing": glbbombs.instancing_bomb,
}


@dataclass
class Tally:
    """What the attackers and the bystanders saw."""

    pending_sent: list[int] = field(default_factory=list)  # bytes each pending agent got out
    pending_closes: Counter[str] = field(default_factory=Counter)
    acks: Counter[str] = field(default_factory=Counter)  # "kind: status"
    downloads: Counter[int] = field(default_factory=Counter)  # HTTP status -> count
    streams: Counter[int] = field(default_factory=Counter)
    healthz_ms: list[float] = field(default_factory=list)
    healthz_failed: int = 0
    bystander_ok: int = 0
    bystander_failed: list[str] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)


async def pending_uploader(farm: Farm, token: str, max_bytes: int, chunk: int, t: Tally) -> None:
    """A pending agent streams a maximum-size 'result' for a job that does not exist."""
    sent = 0
    try:
        async with connect(farm.ws, max_size=2**20, ping_interval=None, compression=None) as ws:
            await ws.send(encode(Hello(token=token, versions=(1,), agent_version="hostile",
                                       capabilities=Capabilities())))  # fmt: skip
            await ws.recv()  # welcome (approved: false)
            fake = Artifact(kind="glb", size=max_bytes, sha256="0" * 64)
            await ws.send(encode(Result(job="no-such-job", attempt=1, stream=1,
                                        artifacts=(fake,))))  # fmt: skip
            payload = b"\0" * chunk
            for offset in range(0, max_bytes, chunk):
                await ws.send(pack_chunk(1, offset, payload[: max_bytes - offset]))
                sent += min(chunk, max_bytes - offset)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ws.recv(), 10)
            t.pending_closes["sent everything"] += 1
    except ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd is not None else 1006
        t.pending_closes[f"closed {code}"] += 1
    except OSError as exc:
        t.pending_closes[type(exc).__name__] += 1
    t.pending_sent.append(sent)


async def bomber(farm: Farm, token: str, bombs: list[tuple[str, bytes]], t: Tally) -> None:
    """An approved agent that answers each assignment with the next bomb."""
    queue = list(bombs)
    stream = 0
    # A job keeps its bomb across attempts: the retries of a rejected job get it again.
    given: dict[str, tuple[str, bytes]] = {}
    kinds: dict[tuple[str, int], str] = {}
    async with connect(farm.ws, max_size=2**20, ping_interval=None, compression=None) as ws:
        await ws.send(encode(Hello(token=token, versions=(1,), agent_version="hostile",
                                   capabilities=Capabilities(max_batch=1))))  # fmt: skip
        await ws.recv()
        async for frame in ws:
            message = decode_from_coordinator(frame)
            if isinstance(message, Assign):
                for spec in message.jobs:
                    await ws.send(encode(Accepted(job=spec.job, attempt=spec.attempt)))
                    if spec.job not in given:
                        given[spec.job] = (
                            queue.pop(0) if queue else ("legit", glbbombs.huge_mesh(2000))
                        )
                    kind, data = given[spec.job]
                    kinds[(spec.job, spec.attempt)] = kind
                    stream += 1
                    await _upload(ws, spec.job, spec.attempt, stream, data)
            elif isinstance(message, ResultAck):
                kind = kinds.get((message.job, message.attempt), "?")
                t.acks[f"{kind}: {message.status}"] += 1


async def _upload(ws: ClientConnection, job: str, attempt: int, stream: int, data: bytes) -> None:
    await ws.send(encode(Result(job=job, attempt=attempt, stream=stream,
                                artifacts=describe([("glb", data)]))))  # fmt: skip
    for frame in iter_chunks(stream, data, 256 * 1024):
        await ws.send(frame)


async def stream_flood(browser: httpx.AsyncClient, stop: asyncio.Event, t: Tally) -> None:
    """1000 stream attempts by one user through a bounded number of connections."""
    gate = asyncio.Semaphore(STREAM_CONNECTIONS)

    async def attempt() -> None:
        async with gate:
            try:
                async with browser.stream("GET", "/history/events") as response:
                    t.streams[response.status_code] += 1
                    if response.status_code == 200:
                        await stop.wait()  # hold what the caps let us hold
            except httpx.HTTPError:
                t.streams[0] += 1

    await asyncio.gather(*(attempt() for _ in range(STREAM_ATTEMPTS)))


async def downloads(api: httpx.AsyncClient, job_ids: list[str], t: Tally) -> None:
    for job in job_ids:
        for fmt in ("obj", "stl", "ply"):
            answers = await asyncio.gather(
                *(api.get(f"/api/v1/jobs/{job}/download/{fmt}") for _ in range(DOWNLOADS_AT_ONCE)),
                return_exceptions=True,
            )
            for answer in answers:
                t.downloads[answer.status_code if isinstance(answer, httpx.Response) else 0] += 1


async def probe(farm: Farm, stop: asyncio.Event, t: Tally) -> None:
    """/healthz latency, measured from its own process so this one's load does not count."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.hostile", "--probe", farm.http,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await stop.wait()
    finally:
        proc.terminate()
        out, _ = await proc.communicate()
        if out:
            found = json.loads(out)
            t.healthz_ms, t.healthz_failed = found["ms"], found["failed"]


def probe_main(url: str) -> int:
    """The probe process: GET /healthz every 20 ms until SIGTERM, then print the figures."""
    stopped = False

    def on_term(_signum: int, _frame: object) -> None:
        nonlocal stopped
        stopped = True

    signal.signal(signal.SIGTERM, on_term)
    latencies: list[float] = []
    failed = 0
    with httpx.Client(base_url=url, timeout=10) as client:
        while not stopped:
            started = time.perf_counter()
            try:
                failed += client.get("/healthz").status_code != 200
            except httpx.HTTPError:
                failed += 1
            latencies.append((time.perf_counter() - started) * 1000)
            time.sleep(0.02)
    print(json.dumps({"ms": latencies, "failed": failed}))
    return 0


async def sample_rss(farm: Farm, stop: asyncio.Event, t: Tally) -> None:
    while not stop.is_set():
        t.rss.append(farm.rss_bytes())
        await asyncio.sleep(0.01)


async def bystander(farm: Farm, key: str, stop: asyncio.Event, t: Tally) -> None:
    """Another user going about their business: every answer must be a 200."""
    try:
        await _go_about(farm, key, stop, t)
    except Exception as exc:  # the report must show it, not swallow it with the task
        t.bystander_failed.append(f"bystander crashed: {exc!r}")
        raise


async def _go_about(farm: Farm, key: str, stop: asyncio.Event, t: Tally) -> None:
    browser = await farm.browser(2, "bystander")
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=farm.http, timeout=30, headers=headers) as api:
        try:
            await _requests(browser, api, stop, t)
        finally:
            await browser.aclose()


async def _requests(
    browser: httpx.AsyncClient, api: httpx.AsyncClient, stop: asyncio.Event, t: Tally
) -> None:
    while not stop.is_set():
        for client, path in ((browser, "/history"), (api, "/api/v1/jobs"), (browser, "/")):
            try:
                status = (await client.get(path)).status_code
            except httpx.HTTPError as exc:
                t.bystander_failed.append(f"{path}: {type(exc).__name__}")
                continue
            if status == 200:
                t.bystander_ok += 1
            else:
                t.bystander_failed.append(f"{path}: {status}")
        await asyncio.sleep(0.1)


async def run() -> tuple[Tally, dict[str, float]]:
    from coordinator.cli.admin_cli import create_api_key, create_user, issue_token
    from coordinator.settings import load_settings

    farm = await start_farm(1)
    cfg = load_settings({"data_dir": farm.data_dir}, environ={})
    pending = [
        (await issue_token(cfg, "bench", f"pending {i}", approved=False))[1]
        for i in range(PENDING_AGENTS)
    ]
    await create_user(cfg, "bystander", PASSWORD, None, is_admin=False)
    bystander_key = await create_api_key(cfg, "bystander", "bench")
    bombs = [(kind, make()) for kind, make in BOMB_KINDS.items() for _ in range(BOMBS_PER_KIND)]
    t = Tally()
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        await asyncio.sleep(1.0)
        idle = farm.rss_bytes()
        tasks += [
            asyncio.create_task(probe(farm, stop, t)),
            asyncio.create_task(sample_rss(farm, stop, t)),
            asyncio.create_task(bystander(farm, bystander_key, stop, t)),
            asyncio.create_task(bomber(farm, farm.tokens[0], bombs, t)),
        ]
        max_bytes, chunk = 64 * 2**20, 256 * 1024  # the coordinator's defaults
        uploads = [
            asyncio.create_task(pending_uploader(farm, token, max_bytes, chunk, t))
            for token in pending
        ]
        flooder = await farm.browser(STREAM_CONNECTIONS + 10)
        flood = asyncio.create_task(stream_flood(flooder, stop, t))
        started = time.perf_counter()
        async with farm.api() as api:
            job_ids = await farm.submit(api, len(bombs) + 1, steps=4)  # + one legit model
            async with asyncio.timeout(300):
                while True:
                    page = (await api.get("/api/v1/jobs", params={"limit": 100})).json()
                    states = {job["id"]: job["state"] for job in page["jobs"]}
                    if all(states.get(i) in {"succeeded", "failed"} for i in job_ids):
                        break
                    await asyncio.sleep(0.1)
            stored = [i for i in job_ids if states[i] == "succeeded"]
            failed_jobs = sum(states[i] == "failed" for i in job_ids)
            await downloads(api, stored, t)
        async with asyncio.timeout(300):
            await asyncio.gather(*uploads)
        elapsed = time.perf_counter() - started
        stop.set()
        await asyncio.wait_for(flood, 60)
        await flooder.aclose()
        # The probe, the sampler and the bystander hand in their figures as they stop.
        await asyncio.wait_for(asyncio.gather(*tasks[:3]), 60)
        peak = max(t.rss)
        figures = {
            "idle_mb": idle / 2**20,
            "peak_mb": peak / 2**20,
            "over_idle_mb": (peak - idle) / 2**20,
            "healthz_p50": percentile(t.healthz_ms, 50),
            "healthz_p99": percentile(t.healthz_ms, 99),
            "healthz_max": max(t.healthz_ms),
            "seconds": elapsed,
            "stored": len(stored),
            "failed_jobs": failed_jobs,
        }
        return t, figures
    finally:
        stop.set()
        await cancel_all(tasks)
        farm.stop()


def render(t: Tally, f: dict[str, float], command: str) -> str:
    met = f["over_idle_mb"] < 300 and f["healthz_p99"] < 100 and not t.bystander_failed
    acks = ", ".join(f"{k} ×{v}" for k, v in sorted(t.acks.items()))
    streams = ", ".join(f"{code or 'error'} ×{n}" for code, n in sorted(t.streams.items()))
    closes = ", ".join(f"{k} ×{v}" for k, v in sorted(t.pending_closes.items()))
    dl = ", ".join(f"{code or 'error'} ×{n}" for code, n in sorted(t.downloads.items()))
    sent = sum(t.pending_sent) / 2**20
    return (
        f"Command: `{command}` ({machine()}).\n\n"
        f"All at once for {f['seconds']:.1f} s: {PENDING_AGENTS} pending agents each announcing "
        f"a 64 MiB result for a job that does not exist ({sent:,.0f} MiB sent in all; {closes}); "
        f"an approved agent answering with {BOMBS_PER_KIND} GLB bombs of each kind "
        f"({', '.join(BOMB_KINDS)}; a rejected job is retried with the same bomb) and one "
        f"legitimate model (acks: {acks}; {f['failed_jobs']:.0f} jobs failed); OBJ/STL/PLY "
        f"downloads of the {f['stored']:.0f} stored models, {DOWNLOADS_AT_ONCE} at once per "
        f"format ({dl}); one user making {STREAM_ATTEMPTS} event-stream attempts through "
        f"{STREAM_CONNECTIONS} connections ({streams}). A second user loaded their pages and "
        f"the API every 100 ms: {t.bystander_ok} answers, {len(t.bystander_failed)} failed.\n\n"
        "| RSS idle | RSS peak | peak over idle | target | /healthz p50 | p99 | max | target "
        "| bystander failures | met |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
        f"| {f['idle_mb']:.0f} MiB | {f['peak_mb']:.0f} MiB | {f['over_idle_mb']:.0f} MiB "
        f"| < 300 MB | {f['healthz_p50']:.1f} ms | {f['healthz_p99']:.1f} ms "
        f"| {f['healthz_max']:.0f} ms | < 100 ms | {len(t.bystander_failed)} "
        f"| {'yes' if met else 'no'} |\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-docs", action="store_true", help=f"rewrite '{SECTION}'")
    parser.add_argument("--probe", metavar="URL", help=argparse.SUPPRESS)  # the probe process
    args = parser.parse_args(argv)
    if args.probe:
        return probe_main(args.probe)
    raise_fd_limit()
    tally, figures = asyncio.run(run())
    body = render(tally, figures, "python -m bench.hostile")
    print(body, end="")
    if tally.bystander_failed:
        print("bystander failures:", Counter(tally.bystander_failed).most_common(5))
    if args.write_docs:
        write_section(SECTION, body, "Latest run")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
