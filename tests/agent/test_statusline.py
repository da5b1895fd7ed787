"""The live terminal status line: what it shows, and that logs print above it."""

from __future__ import annotations

import asyncio
import io
import logging
import random
from pathlib import Path

from agent.connection import AgentClient, Backoff
from agent.runner import Runner
from agent.settings import AgentSettings, Secret
from agent.spool import Spool
from agent.statusline import StatusAwareHandler, StatusLine, bar
from agent.wslink import capabilities_for
from protocol import Accepted, Assign, Heartbeat, JobSpec, Progress, Result, ResultAck, Upload
from tests.support.agent_fakes import (
    FAKE_TYPES,
    TIMEOUT_S,
    FakeDeviceInfo,
    FakeGenerator,
    ScriptedCoordinator,
    welcome,
)


def test_statusline_bar_is_bounded() -> None:
    assert bar(0, 64, 8) == "[........]"
    assert bar(32, 64, 8) == "[####....]"
    assert bar(99, 64, 8) == "[########]"
    assert bar(3, 0, 8) == "[........]"


def test_statusline_shows_job_steps_jobs_done_and_credit() -> None:
    line = StatusLine(io.StringIO(), enabled=True, min_interval_s=0)
    line.connection("agent a1 connected")
    line.assigned([("j1", 64), ("j2", 64)])
    line.progress(["j1", "j2"], "sampling", 16, 64, 30.0)
    assert line.render() == (
        "agent a1 connected | job j1 +1 sampling [#####...............] 16/64 ETA 30s"
        " | done 0 | credit ≈ 0.0"
    )
    line.finished("j1", stored=True)
    line.finished("j2", stored=False)  # rejected: no credit
    line.pause("outside working hours")
    assert line.render() == (
        "agent a1 connected (paused: outside working hours) | idle | done 1 | credit ≈ 1.0"
    )


def test_statusline_off_without_a_terminal_and_logs_print_above_it() -> None:
    quiet = io.StringIO()
    StatusLine(quiet).connection("x")  # StringIO is not a tty: nothing drawn
    assert quiet.getvalue() == ""
    stream = io.StringIO()
    line = StatusLine(stream, enabled=True, min_interval_s=0)
    line.connection("connected")
    logger = logging.getLogger("test-statusline")
    logger.propagate = False
    logger.addHandler(StatusAwareHandler(line))
    logger.warning("hello")
    text = stream.getvalue()
    # drawn, cleared, the record on its own line, drawn again
    assert text.index("\rconnected") < text.index("\r\x1b[Khello\n") < text.rindex("\rconnected")


class RecordingLine(StatusLine):
    def __init__(self, stream: io.StringIO) -> None:
        super().__init__(stream, enabled=True, min_interval_s=0)
        self.acked = asyncio.Event()

    def finished(self, job: str, stored: bool) -> None:
        super().finished(job, stored)
        self.acked.set()


async def test_statusline_follows_a_real_job_over_the_socket(tmp_path: Path) -> None:
    stream = io.StringIO()
    status = RecordingLine(stream)
    async with ScriptedCoordinator() as server:
        settings = AgentSettings(url=server.url, token=Secret("t"), data_dir=tmp_path)
        runner = Runner(FakeGenerator(), Spool(tmp_path / "spool"), types=FAKE_TYPES)
        runner.status = status
        client = AgentClient(
            settings,
            runner,
            capabilities_for(FakeDeviceInfo(), settings),
            backoff=Backoff(base_s=0.01, cap_s=0.05),
            rng=random.Random(1),
        )
        task = asyncio.create_task(client.run())
        peer = await server.next_peer()
        await peer.handshake(welcome(agent_id="a7"))
        spec = JobSpec(job="j1", attempt=1, prompt="a cup", seed=1, guidance=15.0, steps=128)
        await peer.send(Assign(jobs=(spec,)))
        upload = await peer.expect(Upload, skip=(Heartbeat, Progress, Accepted, Result))
        await peer.send(ResultAck(job="j1", attempt=1, status="stored"))
        async with asyncio.timeout(TIMEOUT_S):
            await status.acked.wait()
        client.stop()
        await task
    assert upload.result.job == "j1"
    text = stream.getvalue()
    assert "agent a7 connected | job j1 sampling [" in text
    assert "done 1 | credit ≈ 2.0" in status.render()
