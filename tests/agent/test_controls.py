"""The owner's controls, end to end over a real WebSocket with a scripted coordinator.

Pause/resume from the coordinator and from the CLI, working hours with a fake
clock, yielding to other GPU work with a fake NVML, a CUDA out-of-memory
fallback with a generator that raises torch's OOM error, and the blocklist.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from agent.batches import GeneratorTypes
from agent.cli import main
from agent.connection import AgentClient, Backoff
from agent.controls import Controls, build_controls
from agent.runner import Runner
from agent.settings import AgentSettings, Secret
from agent.spool import Spool
from agent.wslink import capabilities_for
from protocol import (
    Accepted,
    Assign,
    Declined,
    Failed,
    Heartbeat,
    JobSpec,
    Pause,
    Progress,
    Result,
    ResultAck,
    Resume,
    Status,
    Upload,
)
from tests.support.agent_fakes import (
    FAKE_TYPES,
    TIMEOUT_S,
    FakeDeviceInfo,
    FakeGenerator,
    FakeRequest,
    Peer,
    ScriptedCoordinator,
    welcome,
)

FAST = Backoff(base_s=0.01, cap_s=0.05, reset_after_s=60.0, not_approved_s=0.05)
QUIET = (Heartbeat, Progress)
MONDAY_10 = datetime(2026, 11, 30, 10, 0)  # a Monday
SATURDAY_10 = datetime(2026, 12, 5, 10, 0)


def spec(job: str, prompt: str | None = None) -> JobSpec:
    return JobSpec(job=job, attempt=1, prompt=prompt or f"a {job}", seed=3, guidance=15.0, steps=4)


class OomGenerator(FakeGenerator):
    """Raises CUDA out-of-memory for any batch larger than ``fits``."""

    def __init__(self, fits: int) -> None:
        super().__init__()
        self.fits = fits
        self.released = 0

    def generate(
        self,
        requests: Sequence[FakeRequest],
        progress: Callable[[Any], None],
        should_stop: Callable[[], bool],
    ) -> list[Any]:
        if len(requests) > self.fits:
            self.calls.append(list(requests))
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().generate(requests, progress, should_stop)

    def release_memory(self) -> None:
        self.released += 1


class FakeNvml:
    """The few pynvml functions the GPU watch uses, with a scriptable load."""

    def __init__(self) -> None:
        self.processes: list[SimpleNamespace] = []
        self.percent = 0
        self.inits = 0

    def nvmlInit(self) -> None:
        self.inits += 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        return f"gpu{index}"

    def nvmlDeviceGetComputeRunningProcesses(self, handle: str) -> list[SimpleNamespace]:
        return self.processes

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: str) -> list[SimpleNamespace]:
        return []

    def nvmlDeviceGetUtilizationRates(self, handle: str) -> SimpleNamespace:
        return SimpleNamespace(gpu=self.percent, memory=0)


@dataclass
class Clock:
    now: float = 1000.0
    local: datetime = MONDAY_10

    def monotonic(self) -> float:
        return self.now

    def local_now(self) -> datetime:
        return self.local


@dataclass
class Rig:
    client: AgentClient
    runner: Runner
    controls: Controls
    settings: AgentSettings
    generator: FakeGenerator
    task: asyncio.Task[None]
    clock: Clock = field(default_factory=Clock)


@asynccontextmanager
async def rig(
    server: ScriptedCoordinator,
    tmp_path: Path,
    *,
    generator: FakeGenerator | None = None,
    types: GeneratorTypes = FAKE_TYPES,
    nvml: FakeNvml | None = None,
    clock: Clock | None = None,
    max_batch: int = 4,
    **options: Any,
) -> AsyncIterator[Rig]:
    settings = AgentSettings(
        url=server.url,
        token=Secret("tok"),
        data_dir=tmp_path,
        spool_dir=tmp_path / "spool",
        max_batch=max_batch,
        **options,
    )
    clock = clock or Clock()
    generator = generator or FakeGenerator()
    runner = Runner(generator, Spool(settings.spool_dir), max_batch=max_batch, types=types)
    controls = build_controls(
        settings,
        runner,
        nvml_importer=(lambda: nvml) if nvml is not None else None,
        local_now=clock.local_now,
        clock=clock.monotonic,
        poll_s=0.02,
    )
    client = AgentClient(
        settings,
        runner,
        capabilities_for(FakeDeviceInfo(), settings),
        backoff=FAST,
        rng=random.Random(1),
        grace_s=5.0,
        controls=controls,
    )
    task = asyncio.create_task(client.run())
    try:
        yield Rig(client, runner, controls, settings, generator, task, clock)
    finally:
        client.grace_s = 0.2
        client.stop(cancel=True)
        async with asyncio.timeout(TIMEOUT_S):
            await asyncio.gather(task, return_exceptions=True)


async def connect(server: ScriptedCoordinator, version: int = 2) -> tuple[Peer, Status | None]:
    peer = await server.next_peer()
    await peer.handshake(welcome(version=version))
    if version < 2:
        return peer, None
    return peer, await peer.expect(Status, skip=QUIET)


async def status_where(peer: Peer, check: Callable[[Status], bool]) -> Status:
    async with asyncio.timeout(TIMEOUT_S):
        while True:
            status = await peer.expect(Status, skip=QUIET)
            if check(status):
                return status


async def finish_upload(peer: Peer) -> Upload:
    upload = await peer.expect(Upload, skip=(*QUIET, Result, Accepted))
    await peer.send(
        ResultAck(job=upload.result.job, attempt=upload.result.attempt, status="stored")
    )
    return upload


@pytest.fixture
async def server() -> AsyncIterator[ScriptedCoordinator]:
    async with ScriptedCoordinator() as coordinator:
        yield coordinator


# ------------------------------------------------------------------------------ pause


async def test_controls_status_after_welcome_names_the_owners_preferences(
    server: ScriptedCoordinator, tmp_path: Path
) -> None:
    async with rig(server, tmp_path, prefer_own=True, prefer_users=("alice", "bob")):
        _, status = await connect(server)
        assert status == Status(paused=False, prefer_own=True, prefer_users=("alice", "bob"))


async def test_controls_pause_from_the_page_declines_new_work_and_survives_a_restart(
    server: ScriptedCoordinator, tmp_path: Path
) -> None:
    async with rig(server, tmp_path) as r:
        peer, _ = await connect(server)
        await peer.send(Pause(cancel=False, reason="paused from the Contribute page"))
        status = await peer.expect(Status, skip=QUIET)
        assert status.paused and status.reason == "paused from the Contribute page"
        saved = json.loads((tmp_path / "control.json").read_text())
        assert saved["paused"] is True and saved["by"] == "web"
        # An assign that crossed the status is declined, no try spent, nothing run.
        await peer.send(Assign(jobs=(spec("j1"),)))
        declined = await peer.expect(Declined, skip=QUIET)
        assert (declined.job, declined.reason) == ("j1", "paused")
        assert r.generator.calls == []
    async with rig(server, tmp_path):  # a restarted agent is still paused
        peer, status = await connect(server)
        assert status is not None and status.paused
        await peer.send(Resume())
        assert not (await peer.expect(Status, skip=QUIET)).paused
        await peer.send(Assign(jobs=(spec("j2"),)))
        assert (await finish_upload(peer)).result.job == "j2"


async def test_controls_pause_with_cancel_gives_the_running_batch_back(
    server: ScriptedCoordinator, tmp_path: Path
) -> None:
    gate = threading.Event()
    async with rig(server, tmp_path, generator=FakeGenerator(gate=gate)) as r:
        peer, _ = await connect(server)
        await peer.send(Assign(jobs=(spec("j1"), spec("j2"))))
        await peer.expect(Progress, skip=(Heartbeat, Accepted))
        await peer.send(Pause(cancel=True))
        found = {await peer.expect(Declined, skip=(*QUIET, Status, Accepted)) for _ in range(2)}
        assert {(d.job, d.reason) for d in found} == {("j1", "paused"), ("j2", "paused")}
        assert r.generator.stop_observed.is_set()


async def test_controls_pause_and_resume_from_the_cli_reach_the_running_agent(
    server: ScriptedCoordinator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with rig(server, tmp_path):
        peer, _ = await connect(server)
        assert main(["pause", "--data-dir", str(tmp_path)]) == 0
        assert "paused" in capsys.readouterr().out
        status = await status_where(peer, lambda s: s.paused)
        assert "shapefarm-agent pause" in status.reason
        assert main(["resume", "--data-dir", str(tmp_path)]) == 0
        await status_where(peer, lambda s: not s.paused)


def test_controls_cli_pause_usage_errors_exit_2(tmp_path: Path) -> None:
    assert main(["pause", "--data-dir", str(tmp_path), "--later"]) == 2
    assert main(["resume", "--cancel"]) == 2
    assert not (tmp_path / "control.json").exists()


async def test_controls_a_version_1_coordinator_gets_no_status_and_a_blocked_job_fails(
    server: ScriptedCoordinator, tmp_path: Path
) -> None:
    blocklist = tmp_path / "blocked.txt"
    blocklist.write_text("gun\n")
    async with rig(server, tmp_path, blocklist=blocklist):
        peer, _ = await connect(server, version=1)
        await peer.send(Assign(jobs=(spec("j1", "a toy gun"),)))
        failed = await peer.expect(Failed, skip=QUIET)  # no Status came before it
        assert failed.job == "j1" and failed.retryable


# ------------------------------------------------------------------------------ hours, GPU


async def test_controls_working_hours_pause_and_resume_with_the_local_clock(
    server: ScriptedCoordinator, tmp_path: Path
) -> None:
    clock = Clock(local=SATURDAY_10)
    async with rig(server, tmp_path, clock=clock, schedule="Mon-Fri 09:00-18:00"):
        peer, status = await connect(server)
        assert status is not None and status.paused
        assert status.reason == "outside working hours (Mon-Fri 09:00-18:00)"
        clock.local = MONDAY_10
        await status_where(peer, lambda s: not s.paused)
        clock.local = datetime(2026, 11, 30, 18, 0)  # the end is exclusive
        await status_where(peer, lambda s: s.paused)


async def test_controls_yield_to_other_gpu_work_then_resume_after_the_quiet_period(
    server: ScriptedCoordinator, tmp_path: Path
) -> None:
    nvml = FakeNvml()
    clock = Clock()
    async with rig(server, tmp_path, nvml=nvml, clock=clock, yield_gpu=True, gpu_quiet_s=60):
        peer, status = await connect(server)
        assert status is not None and not status.paused and nvml.inits == 1
        nvml.processes = [SimpleNamespace(pid=4242, usedGpuMemory=3 * 2**30)]  # a game
        busy = await status_where(peer, lambda s: s.paused)
        assert busy.reason == "other programs use 3072 MB of GPU memory"
        nvml.processes = []
        quiet = await status_where(peer, lambda s: "stay free" in s.reason)
        assert quiet.paused
        clock.now += 61
        await status_where(peer, lambda s: not s.paused)
        nvml.percent = 95  # busy without memory figures (Windows WDDM), agent idle
        assert (await status_where(peer, lambda s: s.paused)).reason.startswith("the GPU is 95%")


async def test_controls_yield_gpu_without_nvml_runs_on_and_says_why(
    server: ScriptedCoordinator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def missing() -> Any:
        raise ImportError("No module named 'pynvml'")

    settings = AgentSettings(url=server.url, token=Secret("t"), data_dir=tmp_path, yield_gpu=True)
    runner = Runner(FakeGenerator(), Spool(tmp_path / "spool"), types=FAKE_TYPES)
    controls = build_controls(settings, runner, nvml_importer=missing)
    assert controls.gpu is None
    assert "pip install nvidia-ml-py" in caplog.text


# ------------------------------------------------------------------------------ limits


async def test_controls_cuda_oom_retries_in_smaller_batches_and_loses_no_job(
    server: ScriptedCoordinator, tmp_path: Path
) -> None:
    generator = OomGenerator(fits=1)
    types = GeneratorTypes(
        FakeRequest, FAKE_TYPES.cancelled, FAKE_TYPES.error, oom=(torch.cuda.OutOfMemoryError,)
    )
    async with rig(server, tmp_path, generator=generator, types=types) as r:
        peer, _ = await connect(server)
        jobs = tuple(spec(f"j{i}") for i in range(4))
        await peer.send(Assign(jobs=jobs))
        uploaded: set[str] = set()
        lowered: list[int | None] = []
        while len(uploaded) < len(jobs):
            item = await peer.next(skip=(*QUIET, Result, Accepted))
            assert not isinstance(item, Failed | Declined), item
            if isinstance(item, Status):
                lowered.append(item.max_batch)
            elif isinstance(item, Upload):
                uploaded.add(item.result.job)
                await peer.send(ResultAck(job=item.result.job, attempt=1, status="stored"))
        assert uploaded == {"j0", "j1", "j2", "j3"}
        # 4 runs out of memory, then 2, then each job alone
        assert [len(call) for call in generator.calls] == [4, 2, 1, 1, 1, 1]
        assert r.runner.max_batch == 1 and generator.released == 2
        assert lowered == [2, 1]  # the coordinator is told to send smaller batches


async def test_controls_a_lone_job_that_runs_out_of_memory_fails_retryably(
    server: ScriptedCoordinator, tmp_path: Path
) -> None:
    types = GeneratorTypes(
        FakeRequest, FAKE_TYPES.cancelled, FAKE_TYPES.error, oom=(torch.cuda.OutOfMemoryError,)
    )
    async with rig(server, tmp_path, generator=OomGenerator(fits=0), types=types, max_batch=1):
        peer, _ = await connect(server)
        await peer.send(Assign(jobs=(spec("j1"),)))
        failed = await peer.expect(Failed, skip=(*QUIET, Accepted))
        assert failed.retryable and "out of GPU memory even for one job" in failed.reason


# ------------------------------------------------------------------------------ blocklist


async def test_controls_blocklisted_job_is_declined_and_the_rest_of_the_batch_runs(
    server: ScriptedCoordinator, tmp_path: Path
) -> None:
    blocklist = tmp_path / "blocked.txt"
    blocklist.write_text("# no weapons\ngun\nre:^evil\\b\n")
    async with rig(server, tmp_path, blocklist=blocklist) as r:
        peer, _ = await connect(server)
        await peer.send(
            Assign(jobs=(spec("j1", "a toy GUN"), spec("j2", "a red chair"), spec("j3", "Evil x")))
        )
        declined = [await peer.expect(Declined, skip=(*QUIET, Accepted)) for _ in range(2)]
        assert {(d.job, d.reason) for d in declined} == {("j1", "blocked"), ("j3", "blocked")}
        assert (await finish_upload(peer)).result.job == "j2"
        assert [[q.job_id for q in call] for call in r.generator.calls] == [["j2"]]


def test_controls_bad_blocklist_stops_the_agent_at_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocklist = tmp_path / "blocked.txt"
    blocklist.write_text("fine\nre:([unclosed\n")
    code = main(
        [
            "--url",
            "ws://127.0.0.1:9/agent/ws",
            "--token",
            "t",
            "--model",
            "instant",
            "--data-dir",
            str(tmp_path),
            "--blocklist",
            str(blocklist),
        ]
    )
    assert code == 1
