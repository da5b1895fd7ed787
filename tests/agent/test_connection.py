from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent import __version__
from agent.connection import AgentClient, AuthenticationError, Backoff
from agent.runner import Runner
from agent.settings import AgentSettings, Secret
from agent.spool import Spool, SpooledResult
from agent.wslink import capabilities_for
from protocol import (
    SUPPORTED_VERSIONS,
    Accepted,
    Assign,
    Cancel,
    CloseCode,
    Drain,
    Error,
    Failed,
    Heartbeat,
    JobSpec,
    Progress,
    Result,
    ResultAck,
    Upload,
)
from tests.support.agent_fakes import (
    FAKE_TYPES,
    TIMEOUT_S,
    FakeDeviceInfo,
    FakeGenerationError,
    FakeGenerator,
    ScriptedCoordinator,
    glb_for,
    preview_for,
    sha256,
    welcome,
)

FAST = Backoff(base_s=0.01, cap_s=0.05, reset_after_s=60.0, not_approved_s=0.05)


@dataclass
class Harness:
    client: AgentClient
    runner: Runner
    spool: Spool
    generator: FakeGenerator
    task: asyncio.Task[None]

    async def stopped(self) -> None:
        async with asyncio.timeout(TIMEOUT_S):
            await self.task


@pytest.fixture
async def server() -> AsyncIterator[ScriptedCoordinator]:
    async with ScriptedCoordinator() as coordinator:
        yield coordinator


@asynccontextmanager
async def agent(
    server: ScriptedCoordinator,
    tmp_path: Path,
    generator: FakeGenerator | None = None,
    spooled: tuple[SpooledResult, ...] = (),
) -> AsyncIterator[Harness]:
    settings = AgentSettings(
        url=server.url, token=Secret("tok-123"), data_dir=tmp_path, spool_dir=tmp_path / "spool"
    )
    spool = Spool(settings.spool_dir)
    for entry in spooled:
        spool.put(entry)
    generator = generator or FakeGenerator()
    runner = Runner(generator, spool, types=FAKE_TYPES)
    client = AgentClient(
        settings,
        runner,
        capabilities_for(FakeDeviceInfo(), settings),
        backoff=FAST,
        rng=random.Random(7),
        grace_s=5.0,
    )
    harness = Harness(client, runner, spool, generator, asyncio.create_task(client.run()))
    try:
        yield harness
    finally:
        if not harness.task.done():
            client.grace_s = 0.2  # unacknowledged results stay spooled; no need to wait
            client.stop(cancel=True)
        async with asyncio.timeout(TIMEOUT_S):
            await asyncio.gather(harness.task, return_exceptions=True)


def spec(job: str, attempt: int = 1) -> JobSpec:
    return JobSpec(job=job, attempt=attempt, prompt=f"a {job}", seed=3, guidance=15.0, steps=4)


def expected_glb(job: str) -> bytes:
    from tests.support.agent_fakes import FakeRequest

    return glb_for(FakeRequest(job, f"a {job}", 3, 15.0, 4))


async def test_connection_hello_carries_token_versions_capabilities_and_holding(
    server: ScriptedCoordinator, tmp_path: Path
) -> None:
    old = SpooledResult("old-job", 2, (("glb", b"glTF"),))
    async with agent(server, tmp_path, spooled=(old,)):
        peer = await server.next_peer()
        hello = await peer.handshake()
        assert hello.token == "tok-123"
        assert hello.versions == SUPPORTED_VERSIONS
        assert hello.agent_version == __version__
        assert hello.capabilities.gpu_name == "Fake RTX 9090"
        assert hello.capabilities.vram_mb == 24576
        assert hello.capabilities.max_batch == 4
        assert hello.holding == (("old-job", 2),)


async def test_connection_heartbeats_at_the_welcomed_cadence(
    server: ScriptedCoordinator, tmp_path: Path
) -> None:
    async with agent(server, tmp_path):
        peer = await server.next_peer()
        await peer.handshake(welcome(heartbeat_s=0.05))
        beats = [await peer.expect(Heartbeat, skip=()) for _ in range(3)]
        assert [b.seq for b in beats] == [1, 2, 3]
        assert all(b.running == () for b in beats)


async def test_connection_runs_a_job_and_uploads_a_verified_result(
    server: ScriptedCoordinator, tmp_path: Path
) -> None:
    async with agent(server, tmp_path) as harness:
        peer = await server.next_peer()
        await peer.handshake()
        await peer.send(Assign(jobs=(spec("j1"),)))
        assert await peer.expect(Accepted) == Accepted(job="j1", attempt=1)
        progress = await peer.expect(Progress)
        assert (progress.job, progress.stage, progress.step) == ("j1", "sampling", 1)
        header = await peer.next(skip=(Heartbeat, Progress))
        assert isinstance(header, Result) and header.job == "j1"
        assert [a.kind for a in header.artifacts] == ["glb", "preview"]
        upload = await peer.expect(Upload)
        assert upload.held
        assert upload.parts == [expected_glb("j1"), preview_for_job("j1")]
        assert header.artifacts[0].sha256 == sha256(expected_glb("j1"))
        assert harness.spool.pending() == [("j1", 1)]
        await peer.send(ResultAck(job="j1", attempt=1, status="stored"))
        harness.client.stop()
        assert await peer.wait_closed() == 1001
        await harness.stopped()
        assert harness.spool.pending() == []


def preview_for_job(job: str) -> bytes:
    from tests.support.agent_fakes import FakeRequest

    return preview_for(FakeRequest(job, f"a {job}", 3, 15.0, 4))


async def test_connection_cancel_mid_job_sends_no_result(
    server: ScriptedCoordinator, tmp_path: Path
) -> None:
    generator = FakeGenerator(gate=threading.Event())
    async with agent(server, tmp_path, generator):
        peer = await server.next_peer()
        await peer.handshake()
        await peer.send(Assign(jobs=(spec("j1"),)))
        await peer.expect(Accepted)
        await peer.expect(Progress)
        await peer.send(Cancel(job="j1", attempt=1, reason="user cancelled"))
        assert await asyncio.to_thread(generator.stop_observed.wait, TIMEOUT_S)
        generator.gate = None
        await peer.send(Assign(jobs=(spec("j2"),)))
        assert await peer.expect(Accepted) == Accepted(job="j2", attempt=1)
        header = await peer.next(skip=(Heartbeat, Progress))
        assert isinstance(header, Result) and header.job == "j2"  # nothing for j1 came first


async def test_connection_batch_of_two_gives_two_results(
    server: ScriptedCoordinator, tmp_path: Path
) -> None:
    async with agent(server, tmp_path) as harness:
        peer = await server.next_peer()
        await peer.handshake()
        await peer.send(Assign(jobs=(spec("a"), spec("b"))))
        uploads = []
        while len(uploads) < 2:
            item = await peer.next(skip=(Heartbeat, Progress, Accepted, Result))
            assert isinstance(item, Upload)
            uploads.append(item)
        assert {u.result.job: u.parts[0] for u in uploads} == {
            "a": expected_glb("a"),
            "b": expected_glb("b"),
        }
        assert len(harness.generator.calls) == 1


async def test_connection_generation_failure_sends_failed(
    server: ScriptedCoordinator, tmp_path: Path
) -> None:
    async with agent(server, tmp_path, FakeGenerator(fail=FakeGenerationError("boom"))):
        peer = await server.next_peer()
        await peer.handshake()
        await peer.send(Assign(jobs=(spec("j1"),)))
        await peer.expect(Accepted)
        failed = await peer.expect(Failed)
        assert (failed.job, failed.retryable) == ("j1", True)
        assert "boom" in failed.reason


async def test_connection_reconnects_and_resends_the_spooled_result(
    server: ScriptedCoordinator, tmp_path: Path
) -> None:
    async with agent(server, tmp_path) as harness:
        peer = await server.next_peer()
        await peer.handshake()
        await peer.send(Assign(jobs=(spec("j1"),)))
        first = await peer.expect(Upload, skip=(Heartbeat, Progress, Accepted, Result))
        await peer.ws.close(1011, "coordinator restarting")  # no ack: the agent keeps it

        again = await server.next_peer()
        hello = await again.handshake()
        assert hello.holding == (("j1", 1),)
        resent = await again.expect(Upload, skip=(Heartbeat, Result))
        assert resent.parts == first.parts
        await again.send(ResultAck(job="j1", attempt=1, status="stored"))
        harness.client.stop()
        await harness.stopped()
        assert harness.spool.pending() == []
        assert harness.client.connections == 2


def test_backoff_is_full_jitter_under_an_exponential_cap() -> None:
    backoff = Backoff(base_s=0.5, cap_s=30.0)
    rng = random.Random(1)
    for failures in range(12):
        bound = min(30.0, 0.5 * 2**failures)
        delays = [backoff.delay(failures, rng) for _ in range(50)]
        assert all(0.0 <= d <= bound for d in delays)
        assert max(delays) > bound / 2  # spread over the whole range, not a fixed step


@pytest.mark.parametrize("code", [CloseCode.BAD_TOKEN, CloseCode.POLICY_VIOLATION])
async def test_connection_refused_token_stops_without_retry(
    server: ScriptedCoordinator, tmp_path: Path, code: int
) -> None:
    async with agent(server, tmp_path) as harness:
        peer = await server.next_peer()
        await peer.next()  # the hello
        await peer.send(Error(code="bad_token", message="unknown agent token", fatal=True))
        await peer.ws.close(code, "bad token")
        with pytest.raises(AuthenticationError, match="refused"):
            await harness.stopped()
        assert server.peers.empty()


async def test_connection_not_approved_keeps_retrying(
    server: ScriptedCoordinator, tmp_path: Path
) -> None:
    async with agent(server, tmp_path):
        for _ in range(2):
            peer = await server.next_peer()
            await peer.next()
            await peer.ws.close(CloseCode.NOT_ALLOWED, "not approved yet")
        peer = await server.next_peer()
        await peer.handshake()


async def test_connection_owner_suspended_says_so_and_keeps_retrying(
    server: ScriptedCoordinator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with agent(server, tmp_path):
        peer = await server.next_peer()
        await peer.next()
        await peer.ws.close(
            CloseCode.NOT_ALLOWED, "owner_suspended: the account that owns this agent is suspended"
        )
        peer = await server.next_peer()  # it came back: an unban lets it in without a restart
        await peer.handshake()
    said = [r.getMessage() for r in caplog.records]
    assert any("suspended this agent's owner" in m for m in said), said
    assert not any("not approved yet" in m for m in said), said


async def test_connection_survives_malformed_coordinator_messages(
    server: ScriptedCoordinator, tmp_path: Path
) -> None:
    async with agent(server, tmp_path) as harness:
        peer = await server.next_peer()
        await peer.handshake()
        for junk in ("not json", '{"type": "bogus"}', '{"type": "cancel"}', b"\x00binary"):
            await peer.ws.send(junk)
        await peer.send(Assign(jobs=(spec("j1"),)))
        assert await peer.expect(Accepted) == Accepted(job="j1", attempt=1)
        assert harness.client.connections == 1


async def test_connection_protocol_violation_closes_4400_and_reconnects(
    server: ScriptedCoordinator, tmp_path: Path
) -> None:
    async with agent(server, tmp_path):
        peer = await server.next_peer()
        await peer.handshake()
        await peer.ws.send(_encode_welcome())  # a second welcome is out of order
        assert await peer.wait_closed() == CloseCode.PROTOCOL_ERROR
        again = await server.next_peer()
        await again.handshake()


def _encode_welcome() -> str:
    from protocol import encode

    return encode(welcome())


async def test_connection_drain_finishes_the_running_job(
    server: ScriptedCoordinator, tmp_path: Path
) -> None:
    gate = threading.Event()
    generator = FakeGenerator(gate=gate)
    async with agent(server, tmp_path, generator):
        peer = await server.next_peer()
        await peer.handshake()
        await peer.send(Assign(jobs=(spec("j1"),)))
        await peer.expect(Progress, skip=(Heartbeat, Accepted))
        await peer.send(Drain(reason="maintenance"))
        gate.set()
        upload = await peer.expect(Upload, skip=(Heartbeat, Progress, Result))
        assert upload.result.job == "j1"


async def test_connection_graceful_stop_finishes_the_job_then_closes_1001(
    server: ScriptedCoordinator, tmp_path: Path
) -> None:
    gate = threading.Event()
    generator = FakeGenerator(gate=gate)
    async with agent(server, tmp_path, generator) as harness:
        peer = await server.next_peer()
        await peer.handshake()
        await peer.send(Assign(jobs=(spec("j1"),)))
        await peer.expect(Progress, skip=(Heartbeat, Accepted))
        harness.client.stop()  # finish mode (the default)
        gate.set()
        upload = await peer.expect(Upload, skip=(Heartbeat, Progress, Result))
        await peer.send(ResultAck(job=upload.result.job, attempt=1, status="stored"))
        assert await peer.wait_closed() == 1001
        await harness.stopped()
        assert harness.spool.pending() == []
