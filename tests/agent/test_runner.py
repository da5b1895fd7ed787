from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.batches import _Throttle
from agent.runner import Runner
from agent.spool import Spool, SpooledResult
from protocol import (
    Accepted,
    AgentMessage,
    Assign,
    Cancel,
    Failed,
    JobSpec,
    Limits,
    Progress,
    ResultAck,
)
from tests.support.agent_fakes import (
    FAKE_TYPES,
    TIMEOUT_S,
    FakeGenerationError,
    FakeGenerator,
    FakeRequest,
    glb_for,
    limits,
)


@dataclass
class FakeLink:
    limits: Limits = field(default_factory=limits)
    out: asyncio.Queue[AgentMessage | SpooledResult] = field(default_factory=asyncio.Queue)

    async def send(self, message: AgentMessage) -> None:
        self.out.put_nowait(message)

    async def upload(self, result: SpooledResult) -> None:
        self.out.put_nowait(result)

    async def next(self, *, skip: tuple[type, ...] = (Progress,)) -> AgentMessage | SpooledResult:
        async with asyncio.timeout(TIMEOUT_S):
            while True:
                item = await self.out.get()
                if not isinstance(item, skip):
                    return item


def spec(job: str, attempt: int = 1, steps: int = 4, guidance: float = 15.0) -> JobSpec:
    return JobSpec(
        job=job, attempt=attempt, prompt=f"a {job}", seed=1, guidance=guidance, steps=steps
    )


@asynccontextmanager
async def running(
    generator: FakeGenerator, spool: Spool, **kwargs: object
) -> AsyncIterator[tuple[Runner, FakeLink]]:
    runner = Runner(generator, spool, types=FAKE_TYPES, **kwargs)  # type: ignore[arg-type]
    link = FakeLink()
    runner.attach(link)
    pump = asyncio.create_task(runner.pump(link))
    work = asyncio.create_task(runner.run())
    try:
        yield runner, link
    finally:
        runner.request_stop(cancel=True)
        async with asyncio.timeout(TIMEOUT_S):
            await work
        pump.cancel()


async def test_runner_accepts_runs_spools_and_uploads(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    async with running(FakeGenerator(), spool) as (runner, link):
        await runner.handle(Assign(jobs=(spec("j1"),)))
        assert await link.next() == Accepted(job="j1", attempt=1)
        result = await link.next()
        assert isinstance(result, SpooledResult)
        assert result.artifacts[0] == ("glb", glb_for(FakeRequest("j1", "a j1", 1, 15.0, 4)))
        assert spool.pending() == [("j1", 1)]  # spooled before the upload
        await runner.handle(ResultAck(job="j1", attempt=1, status="stored"))
        await runner.wait_settled()  # the delete runs in the background
        assert spool.pending() == []
        assert not (tmp_path / "j1.1").exists()


class GatedSpool(Spool):
    """A spool whose disk writes wait for ``gate`` (or fail with ``error``)."""

    def __init__(self, root: Path, error: OSError | None = None) -> None:
        super().__init__(root)
        self.gate = threading.Event()
        self.error = error

    def put(self, result: SpooledResult) -> None:
        if not self.gate.wait(TIMEOUT_S):
            raise AssertionError("the test never opened the gate")
        if self.error is not None:
            raise self.error
        super().put(result)


async def test_runner_uploads_while_the_spool_writes_and_deletes_after_the_write(
    tmp_path: Path,
) -> None:
    spool = GatedSpool(tmp_path)
    async with running(FakeGenerator(), spool) as (runner, link):
        await runner.handle(Assign(jobs=(spec("j1"),)))
        assert await link.next() == Accepted(job="j1", attempt=1)
        # The upload goes out while the disk write is held back...
        result = await link.next()
        assert isinstance(result, SpooledResult) and result.key == ("j1", 1)
        assert not (tmp_path / "j1.1").exists()
        assert spool.pending() == [("j1", 1)]  # ...and the result is held meanwhile
        assert runner.holding() == (("j1", 1),)  # a reconnect's hello names it
        await runner.handle(ResultAck(job="j1", attempt=1, status="stored"))
        spool.gate.set()  # the write ends after the ack: the delete waited for it
        await runner.wait_settled()
        assert spool.pending() == []
        assert not (tmp_path / "j1.1").exists()


async def test_runner_uploads_from_memory_when_the_disk_refuses_the_result(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = GatedSpool(tmp_path, error=OSError(28, "No space left on device"))
    spool.gate.set()
    async with running(FakeGenerator(), spool) as (runner, link):
        await runner.handle(Assign(jobs=(spec("j1"),)))
        assert await link.next() == Accepted(job="j1", attempt=1)
        result = await link.next()
        assert isinstance(result, SpooledResult) and result.key == ("j1", 1)
        await runner.wait_spooled()
        assert "No space left on device" in caplog.text
        assert spool.pending() == [("j1", 1)]  # still held, in memory only
        assert spool.load("j1", 1) == result
        await runner.handle(ResultAck(job="j1", attempt=1, status="stored"))
        await runner.wait_settled()
        assert spool.pending() == []


async def test_runner_relays_first_and_last_progress_of_each_stage(tmp_path: Path) -> None:
    async with running(FakeGenerator(steps=50), Spool(tmp_path), progress_interval_s=60) as (
        runner,
        link,
    ):
        await runner.handle(Assign(jobs=(spec("j1"),)))
        seen: list[tuple[str, int]] = []
        while True:
            item = await link.next(skip=())
            if isinstance(item, Progress):
                seen.append((item.stage, item.step))
            elif isinstance(item, SpooledResult):
                break
        assert seen == [("sampling", 1), ("sampling", 50), ("decoding", 1)]


def test_throttle_admits_one_update_per_interval_plus_edges() -> None:
    now = [0.0]
    throttle = _Throttle(0.1, lambda: now[0])
    jobs = ("a",)
    assert throttle.admit(jobs, "sampling", 1, 10)
    now[0] = 0.05
    assert not throttle.admit(jobs, "sampling", 2, 10)
    now[0] = 0.11
    assert throttle.admit(jobs, "sampling", 3, 10)
    assert throttle.admit(jobs, "sampling", 10, 10)  # last step always goes
    assert throttle.admit(jobs, "decoding", 1, 2)  # so does a new stage


async def test_runner_cancel_of_one_job_in_a_batch_drops_only_its_result(tmp_path: Path) -> None:
    gate = threading.Event()
    generator = FakeGenerator(gate=gate)
    async with running(generator, Spool(tmp_path)) as (runner, link):
        await runner.handle(Assign(jobs=(spec("j1"), spec("j2"))))
        await asyncio.to_thread(generator.started.wait, TIMEOUT_S)
        await runner.handle(Cancel(job="j1", attempt=1))
        gate.set()
        items = [await link.next() for _ in range(3)]
        uploads = [i for i in items if isinstance(i, SpooledResult)]
        assert [u.job for u in uploads] == ["j2"]
        assert not generator.stop_observed.is_set()
        assert len(generator.calls) == 1 and len(generator.calls[0]) == 2


async def test_runner_cancel_of_every_job_stops_the_gpu_work(tmp_path: Path) -> None:
    generator = FakeGenerator(gate=threading.Event())
    async with running(generator, Spool(tmp_path)) as (runner, link):
        await runner.handle(Assign(jobs=(spec("j1"),)))
        await asyncio.to_thread(generator.started.wait, TIMEOUT_S)
        await runner.handle(Cancel(job="j1", attempt=1))
        assert await asyncio.to_thread(generator.stop_observed.wait, TIMEOUT_S)
        await runner.handle(Assign(jobs=(spec("j2", steps=5),)))
        generator.gate = None
        assert await link.next() == Accepted(job="j1", attempt=1)
        assert await link.next() == Accepted(job="j2", attempt=1)
        item = await link.next()
        assert isinstance(item, SpooledResult) and item.job == "j2"


async def test_runner_cancel_of_a_queued_job_never_runs_it(tmp_path: Path) -> None:
    gate = threading.Event()
    generator = FakeGenerator(gate=gate)
    async with running(generator, Spool(tmp_path)) as (runner, link):
        await runner.handle(Assign(jobs=(spec("j1"),)))
        await asyncio.to_thread(generator.started.wait, TIMEOUT_S)
        await runner.handle(Assign(jobs=(spec("j2"),)))
        await runner.handle(Cancel(job="j2", attempt=1))
        assert runner.running_jobs() == ("j1",)
        gate.set()
        items = [await link.next() for _ in range(3)]
        assert [i.job for i in items if isinstance(i, SpooledResult)] == ["j1"]
        assert [[r.job_id for r in call] for call in generator.calls] == [["j1"]]


async def test_runner_splits_assignments_by_batch_key_and_max_batch(tmp_path: Path) -> None:
    generator = FakeGenerator()
    jobs = (spec("a"), spec("b"), spec("c"), spec("d", guidance=3.0))
    async with running(generator, Spool(tmp_path), max_batch=2) as (runner, link):
        await runner.handle(Assign(jobs=jobs))
        uploads = []
        while len(uploads) < 4:
            item = await link.next()
            if isinstance(item, SpooledResult):
                uploads.append(item.job)
        assert sorted(uploads) == ["a", "b", "c", "d"]
        assert [[r.job_id for r in call] for call in generator.calls] == [["a", "b"], ["c"], ["d"]]


async def test_runner_generation_error_fails_retryably(tmp_path: Path) -> None:
    async with running(FakeGenerator(fail=FakeGenerationError("cuda oom")), Spool(tmp_path)) as (
        runner,
        link,
    ):
        await runner.handle(Assign(jobs=(spec("j1"),)))
        await link.next()
        failed = await link.next()
        assert isinstance(failed, Failed) and failed.retryable and "cuda oom" in failed.reason


async def test_runner_value_error_fails_without_retry(tmp_path: Path) -> None:
    async with running(FakeGenerator(fail=ValueError("bad prompt")), Spool(tmp_path)) as (
        runner,
        link,
    ):
        await runner.handle(Assign(jobs=(spec("j1"),)))
        await link.next()
        failed = await link.next()
        assert isinstance(failed, Failed) and not failed.retryable


async def test_runner_invalid_job_fails_alone_not_its_batch(tmp_path: Path) -> None:
    generator = FakeGenerator()
    async with running(generator, Spool(tmp_path)) as (runner, link):
        await runner.handle(Assign(jobs=(spec("ok"), spec("bad", steps=600))))
        items = [await link.next() for _ in range(4)]
        failed = [i for i in items if isinstance(i, Failed)]
        assert [(f.job, f.retryable) for f in failed] == [("bad", False)]
        assert [i.job for i in items if isinstance(i, SpooledResult)] == ["ok"]


async def test_runner_stop_fails_queued_jobs_and_cancels_running_ones(tmp_path: Path) -> None:
    generator = FakeGenerator(gate=threading.Event())
    spool = Spool(tmp_path)
    runner = Runner(generator, spool, types=FAKE_TYPES)
    link = FakeLink()
    runner.attach(link)
    pump = asyncio.create_task(runner.pump(link))
    work = asyncio.create_task(runner.run())
    await runner.handle(Assign(jobs=(spec("j1"),)))
    await asyncio.to_thread(generator.started.wait, TIMEOUT_S)
    await runner.handle(Assign(jobs=(spec("j2"),)))
    runner.request_stop(cancel=True)
    async with asyncio.timeout(TIMEOUT_S):
        await work
    items = [await link.next() for _ in range(4)]
    failed = {i.job: i.retryable for i in items if isinstance(i, Failed)}
    assert failed == {"j1": True, "j2": True}
    await runner.handle(Assign(jobs=(spec("j3"),)))  # late assignment: refused, not run
    assert isinstance(await link.next(), Failed)
    assert spool.pending() == []
    pump.cancel()


async def test_runner_attach_queues_spooled_results_once(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.put(SpooledResult("old", 2, (("glb", b"glTF"),)))
    runner = Runner(FakeGenerator(), spool, types=FAKE_TYPES)
    assert runner.holding() == (("old", 2),)
    link = FakeLink()
    runner.attach(link)
    runner.attach(link)  # a second attach replaces, not duplicates, the queue
    pump = asyncio.create_task(runner.pump(link))
    item = await link.next()
    assert isinstance(item, SpooledResult) and item.key == ("old", 2)
    async with asyncio.timeout(TIMEOUT_S):
        await runner._outbox.join()
    assert link.out.empty()
    pump.cancel()


async def test_runner_oversized_result_fails_and_is_dropped(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.put(SpooledResult("big", 1, (("glb", b"x" * 100),)))
    runner = Runner(FakeGenerator(), spool, types=FAKE_TYPES)
    link = FakeLink(limits=Limits(max_frame_bytes=1024, max_result_bytes=10, chunk_bytes=8))
    runner.attach(link)
    pump = asyncio.create_task(runner.pump(link))
    failed = await link.next()
    assert isinstance(failed, Failed) and not failed.retryable
    assert spool.pending() == []
    pump.cancel()
