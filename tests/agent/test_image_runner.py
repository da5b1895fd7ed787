"""The runner with image jobs: the verified image reaches the generator; a damaged one, or a
job of the other kind, fails instead of running (the instant generator: no torch)."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from agent import instant
from agent.instant import InstantGenerator, InstantOptions
from agent.runner import Runner
from agent.settings import build_parser
from agent.spool import Spool, SpooledResult
from protocol import (
    IMAGE_MODEL,
    Accepted,
    AgentMessage,
    Assign,
    Failed,
    ImageRef,
    JobSpec,
    Limits,
    Progress,
)
from tests.support.agent_fakes import TIMEOUT_S, limits

IMAGE = b"\x89PNG\r\n\x1a\n pretend pixels"


class Link:
    def __init__(self) -> None:
        self.limits: Limits = limits()
        self.out: asyncio.Queue[AgentMessage | SpooledResult] = asyncio.Queue()

    async def send(self, message: AgentMessage) -> None:
        self.out.put_nowait(message)

    async def upload(self, result: SpooledResult) -> None:
        self.out.put_nowait(result)

    async def next(self) -> AgentMessage | SpooledResult:
        async with asyncio.timeout(TIMEOUT_S):
            while True:
                item = await self.out.get()
                if not isinstance(item, Progress):
                    return item


def image_spec(job: str, data: bytes = IMAGE) -> JobSpec:
    ref = ImageRef(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    return JobSpec(job, 1, "", 5, 3.0, 4, IMAGE_MODEL, kind="image", image=ref)


async def test_image_runner_runs_with_the_image_or_fails(tmp_path: Path) -> None:
    seen: list[bytes | None] = []
    generator = InstantGenerator(InstantOptions(kind="image"))
    original = generator.generate

    def generate(requests, progress, should_stop):  # type: ignore[no-untyped-def]
        seen.extend(r.image for r in requests)
        return original(requests, progress, should_stop)

    generator.generate = generate  # type: ignore[method-assign]
    runner = Runner(generator, Spool(tmp_path), types=instant.TYPES)
    link = Link()
    runner.attach(link)
    pump = asyncio.create_task(runner.pump(link))
    work = asyncio.create_task(runner.run())
    try:
        await runner.handle_image_assign(Assign(jobs=(image_spec("i1"),)), IMAGE)
        assert await link.next() == Accepted(job="i1", attempt=1)
        result = await link.next()
        assert isinstance(result, SpooledResult) and result.job == "i1"
        assert seen == [IMAGE]

        # The bytes were not the announced image: no run, a retryable failure.
        await runner.handle_image_assign(Assign(jobs=(image_spec("i2"),)), None)
        failed = await link.next()
        assert isinstance(failed, Failed) and failed.retryable and "damaged" in failed.reason

        # A text job on an image agent (a coordinator bug) fails, it does not run.
        await runner.handle(Assign(jobs=(JobSpec("t1", 1, "a mug", 5, 3.0, 4),)))
        assert await link.next() == Accepted(job="t1", attempt=1)
        wrong = await link.next()
        assert isinstance(wrong, Failed) and not wrong.retryable
        assert "text job, but this agent runs image jobs" in wrong.reason
        assert seen == [IMAGE]
    finally:
        runner.request_stop(cancel=True)
        async with asyncio.timeout(TIMEOUT_S):
            await work
        pump.cancel()


def test_image_models_are_explained_in_help() -> None:
    text = build_parser().format_help()
    assert "openai/shap-e-img2img" in text and "tiny-img2img" in text
    assert "image-to-3D" in text and "kind=image" in text
