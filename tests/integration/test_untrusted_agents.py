"""Hostile and suspended agents over real sockets (docs/security.md, "Untrusted agents").

A raw WebSocket client plays the agent, so each test can do what a hostile or
buggy agent would: upload for a job it does not hold, stream a maximum-size
upload from a pending agent, claim absurd generation times, send a preview
that is not a PNG, or keep using a token after its owner was banned.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from PIL import Image, PngImagePlugin
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from agent.compression import client_extensions
from agent.instant import tetrahedron_glb
from coordinator.cli.admin_cli import create_user
from coordinator.services import admin_agents, admin_users
from coordinator.store import models
from coordinator.store.uploads import INCOMING
from coordinator.web import stats
from protocol import (
    SUPPORTED_VERSIONS,
    Artifact,
    Assign,
    Capabilities,
    CloseCode,
    CoordinatorMessage,
    Error,
    Hello,
    Result,
    ResultAck,
    Welcome,
    decode_from_coordinator,
    describe,
    encode,
    iter_chunks,
    pack_chunk,
)
from protocol.limits import MAX_STEPS
from protocol.messages import AgentMessage
from tests.support.coordinators import (
    PASSWORD,
    RunningCoordinator,
    api_client,
    make_settings,
    provision,
    running_coordinator,
    wait_for,
)
from tests.support.glbbombs import png_bomb

pytestmark = [pytest.mark.timeout(120)]

M = TypeVar("M", bound=CoordinatorMessage)
LONG = {"lease_s": 60.0, "heartbeat_s": 20.0}  # nothing expires while a test acts


class RawAgent:
    """An agent that does exactly what the test says, nothing on its own."""

    def __init__(self, coord: RunningCoordinator, token_file: Path) -> None:
        self.url = coord.ws
        self.token = token_file.read_text().strip()
        self.ws: ClientConnection | None = None
        self.streams = 0

    async def hello(self) -> CoordinatorMessage:
        # Binary frames raw, as agents send them (a compressed flood is test_compression's).
        self.ws = await connect(
            self.url, max_size=2**22, compression=None, extensions=client_extensions()
        )
        caps = Capabilities(max_steps=MAX_STEPS, formats=("glb", "preview"))
        await self.send(
            Hello(
                token=self.token,
                versions=SUPPORTED_VERSIONS,
                agent_version="raw",
                capabilities=caps,
            )
        )
        return await self.recv()

    async def send(self, message: AgentMessage) -> None:
        assert self.ws is not None
        await self.ws.send(encode(message))

    async def recv(self, within: float = 10.0) -> CoordinatorMessage:
        assert self.ws is not None
        async with asyncio.timeout(within):
            return decode_from_coordinator(await self.ws.recv())

    async def expect(self, kind: type[M], within: float = 10.0) -> M:
        async with asyncio.timeout(within):
            while True:
                message = await self.recv(within)
                if isinstance(message, kind):
                    return message

    async def closed(self, within: float = 10.0) -> tuple[int | None, str]:
        """Read until the coordinator closes; its close code and reason."""
        assert self.ws is not None
        try:
            async with asyncio.timeout(within):
                while True:
                    await self.ws.recv()
        except ConnectionClosed as exc:
            return (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (None, "")

    def header(
        self, job: str, attempt: int, parts: list[tuple[str, bytes]], seconds: float = 0.0
    ) -> Result:
        self.streams += 1
        return Result(job=job, attempt=attempt, stream=self.streams,
                      artifacts=describe(parts), seconds=seconds)  # fmt: skip

    async def upload(
        self, job: str, attempt: int, parts: list[tuple[str, bytes]], seconds: float = 0.0
    ) -> ResultAck:
        assert self.ws is not None
        header = self.header(job, attempt, parts, seconds)
        await self.send(header)
        for frame in iter_chunks(header.stream, b"".join(p for _, p in parts), 4096):
            await self.ws.send(frame)
        return await self.expect(ResultAck)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()


@asynccontextmanager
async def coordinator(tmp_path: Path, **overrides: Any) -> AsyncIterator[RunningCoordinator]:
    settings = make_settings(tmp_path / "data", **{**LONG, **overrides})
    async with running_coordinator(settings) as coord:
        yield coord


async def submit(coord: RunningCoordinator, key: str, prompt: str = "a teapot") -> str:
    async with api_client(coord, key) as client:
        response = await client.post("/api/v1/jobs", json={"prompt": prompt, "steps": 4})
        assert response.status_code == 201, response.text
        return str(response.json()["jobs"][0]["id"])


async def row(coord: RunningCoordinator, kind: type[Any], key: object) -> Any:
    async with coord.farm.sessions() as db:
        found = await db.get(kind, key)
        assert found is not None
        return found


def incoming(coord: RunningCoordinator) -> list[Path]:
    folder = coord.farm.store.root / INCOMING
    return sorted(folder.iterdir()) if folder.is_dir() else []


# --------------------------------------------------------------------------
# item 3: a ban reaches the user's agents


async def set_banned(coord: RunningCoordinator, username: str, banned: bool) -> None:
    async with coord.farm.sessions() as db:
        target = await find_user(db, username)
        actor = await find_user(db, "root")
        await admin_users.set_banned(coord.farm, db, target, banned, actor)


async def find_user(db: AsyncSession, username: str) -> models.User:
    user = await db.scalar(select(models.User).where(models.User.username == username))
    assert user is not None
    return user


async def status_of(coord: RunningCoordinator, agent: RawAgent) -> str:
    """What the admin and volunteer pages show for this agent."""
    async with coord.farm.sessions() as db:
        views = await admin_agents.list_agents(coord.farm, db)
    return {v.agent.id: v.status for v in views}[agent.token.split(".")[1]]


async def test_ban_cuts_off_the_owners_agent_and_unban_lets_it_back(tmp_path: Path) -> None:
    async with coordinator(tmp_path) as coord:
        await create_user(coord.settings, "root", PASSWORD, None, is_admin=True)
        alice_key, alice_token = await provision(coord.settings, tmp_path, "alice")
        bob_key, _ = await provision(coord.settings, tmp_path, "bob")
        agent = RawAgent(coord, alice_token)
        assert isinstance(await agent.hello(), Welcome)
        first = await submit(coord, bob_key, "bob's private prompt")
        assign = await agent.expect(Assign)
        assert assign.jobs[0].job == first

        await set_banned(coord, "alice", True)
        error = await agent.expect(Error)
        assert (error.code, error.fatal) == ("owner_suspended", True)
        code, reason = await agent.closed()
        assert code == CloseCode.NOT_ALLOWED and "owner_suspended" in reason
        # Bob's job went back in line at once, not after a lease or a grace period.
        assert (await row(coord, models.Job, first)).state == "queued"
        async with api_client(coord, alice_key) as client:
            assert (await client.get("/api/v1/jobs")).status_code == 403  # suspended

        # The same token is refused, with the reason, and no job reaches it.
        second = await submit(coord, bob_key, "another private prompt")
        again = RawAgent(coord, alice_token)
        refusal = await again.hello()
        assert isinstance(refusal, Error) and refusal.code == "owner_suspended"
        code, reason = await again.closed()
        assert code == CloseCode.NOT_ALLOWED and "suspended" in reason
        assert not coord.farm.agents
        assert await coord.farm.dispatch_once() == 0
        for job_id in (first, second):
            assert (await row(coord, models.Job, job_id)).state == "queued"
        assert await status_of(coord, agent) == "owner suspended"

        await set_banned(coord, "alice", False)
        back = RawAgent(coord, alice_token)
        welcome = await back.hello()
        assert isinstance(welcome, Welcome) and welcome.approved
        assert (await back.expect(Assign)).jobs[0].job in {first, second}
        assert await status_of(coord, agent) == "approved"
        async with api_client(coord, alice_key) as client:
            assert (await client.get("/api/v1/jobs")).status_code == 200
        await back.close()


async def test_banned_owners_agent_is_never_offered_work(tmp_path: Path) -> None:
    # Even a connection that slipped past the checks is not in the scheduler's snapshot.
    async with coordinator(tmp_path) as coord:
        _, token = await provision(coord.settings, tmp_path, "alice")
        agent = RawAgent(coord, token)
        assert isinstance(await agent.hello(), Welcome)
        conn = next(iter(coord.farm.agents.values()))
        # A ban lands while this connection is between its checks and its registration.
        assert await coord.farm.suspend_owner(conn.owner_id) == [conn]
        coord.farm.register(conn)
        assert coord.farm.snapshot().agents == []
        coord.farm.restore_owner(conn.owner_id)
        # After the unban the old connection is still one being cut off: never free.
        assert [agent.free_slots for agent in coord.farm.snapshot().agents] == [0]
        await agent.close()


# --------------------------------------------------------------------------
# item 7: upload bytes only for a lease, and on disk


async def stream_max_size(agent: RawAgent, size: int, block: bytes) -> ResultAck:
    """Announce and send ``size`` bytes for a job that does not exist."""
    assert agent.ws is not None and size % len(block) == 0
    digest = hashlib.sha256()
    for _ in range(size // len(block)):
        digest.update(block)
    artifact = Artifact(kind="glb", size=size, sha256=digest.hexdigest())
    agent.streams += 1
    await agent.send(Result(job="no-such-job", attempt=1, stream=agent.streams,
                            artifacts=(artifact,)))  # fmt: skip
    for offset in range(0, size, len(block)):
        await agent.ws.send(pack_chunk(agent.streams, offset, block))
    return await agent.expect(ResultAck, within=60)


@pytest.mark.parametrize("approved", [False, True], ids=["pending", "approved-no-lease"])
async def test_upload_without_a_lease_never_sits_in_memory(tmp_path: Path, approved: bool) -> None:
    async with coordinator(tmp_path) as coord:
        size = coord.settings.max_result_bytes  # 64 MiB by default
        _, token = await provision(coord.settings, tmp_path, "mallory", approved=approved)
        agent = RawAgent(coord, token)
        welcome = await agent.hello()
        assert isinstance(welcome, Welcome) and welcome.approved == approved
        block = bytes(range(256)) * 256  # 64 KiB frames
        tracemalloc.start()
        try:
            before, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            ack = await stream_max_size(agent, size, block)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert ack.status == "rejected" and "no such job" in ack.reason
        grown = peak - before
        # The old coordinator held every byte (>= 64 MiB); what is left is frames in flight.
        assert grown < size // 8, f"memory grew by {grown / 2**20:.1f} MiB during the upload"
        assert incoming(coord) == []  # nothing on disk either
        await agent.close()


async def leased(
    coord: RunningCoordinator, tmp_path: Path, username: str = "alice"
) -> tuple[RawAgent, str, int]:
    key, token = await provision(coord.settings, tmp_path, username)
    agent = RawAgent(coord, token)
    assert isinstance(await agent.hello(), Welcome)
    job = await submit(coord, key)
    spec = (await agent.expect(Assign)).jobs[0]
    assert spec.job == job
    return agent, job, spec.attempt


async def upload_started(
    coord: RunningCoordinator, tmp_path: Path, where: str = "memory"
) -> tuple[RawAgent, bytes, Result]:
    """An agent holding a lease has sent the result header of a small GLB, no bytes yet;
    ``where``: "memory" (a small upload's place) or "disk" (the budget is spent)."""
    if where == "disk":
        coord.farm.upload_memory.budget = 0  # as if other uploads held all of it
    agent, job, attempt = await leased(coord, tmp_path)
    glb = tetrahedron_glb(3)
    header = agent.header(job, attempt, [("glb", glb)])
    await agent.send(header)
    return agent, glb, header


async def holding(coord: RunningCoordinator, where: str, glb: bytes) -> bool:
    """Whether the coordinator holds the started upload's bytes where expected (only there)."""
    memory = coord.farm.upload_memory.used
    files = incoming(coord)
    if where == "memory":
        return memory == len(glb) and files == []
    return memory == 0 and len(files) == 1 and files[0].name.startswith(".incoming-")


async def upload_memory_gauge(coord: RunningCoordinator) -> float:
    async with httpx.AsyncClient(base_url=coord.http) as client:  # loopback: may scrape
        text = (await client.get("/metrics")).text
    line = next(x for x in text.splitlines() if x.startswith("shapefarm_upload_memory_bytes "))
    return float(line.split()[1])


async def released(coord: RunningCoordinator) -> bool:
    return coord.farm.upload_memory.used == 0 and incoming(coord) == []


WHERE = pytest.mark.parametrize("where", ["memory", "disk"])


@WHERE
async def test_leased_upload_is_held_until_stored(tmp_path: Path, where: str) -> None:
    async with coordinator(tmp_path) as coord:
        agent, glb, header = await upload_started(coord, tmp_path, where)
        job = header.job
        assert agent.ws is not None
        frames = list(iter_chunks(header.stream, glb, 64))
        await agent.ws.send(frames[0])
        await wait_for(partial(holding, coord, where, glb), 10, f"the upload held in {where}")
        held = len(glb) if where == "memory" else 0
        assert await upload_memory_gauge(coord) == held  # what an operator's /metrics shows
        for frame in frames[1:]:
            await agent.ws.send(frame)
        ack = await agent.expect(ResultAck)
        assert ack.status == "stored", ack
        assert await released(coord)
        assert await upload_memory_gauge(coord) == 0
        assert coord.farm.store.exists(job, "glb")
        await agent.close()


@WHERE
async def test_leased_upload_released_on_bad_checksum(tmp_path: Path, where: str) -> None:
    async with coordinator(tmp_path) as coord:
        agent, glb, header = await upload_started(coord, tmp_path, where)
        assert agent.ws is not None
        for frame in iter_chunks(header.stream, glb[:-1] + bytes([glb[-1] ^ 1]), 64):
            await agent.ws.send(frame)
        assert (await agent.expect(Error)).code == "bad_checksum"
        assert (await agent.closed())[0] == CloseCode.PROTOCOL_ERROR
        assert await released(coord)


@WHERE
async def test_leased_upload_released_on_disconnect(tmp_path: Path, where: str) -> None:
    async with coordinator(tmp_path) as coord:
        agent, glb, header = await upload_started(coord, tmp_path, where)
        assert agent.ws is not None
        await agent.ws.send(next(iter_chunks(header.stream, glb, 64)))
        await wait_for(partial(holding, coord, where, glb), 10, f"the upload held in {where}")
        await agent.close()
        await wait_for(partial(released, coord), 10, "the dropped upload's bytes to go")


async def test_many_small_uploads_hold_no_more_memory_than_the_budget(tmp_path: Path) -> None:
    """Two agents start small uploads with a budget that fits one: the second goes to
    disk; both are stored and everything is given back."""
    async with coordinator(tmp_path) as coord:
        first, glb, first_header = await upload_started(coord, tmp_path)
        coord.farm.upload_memory.budget = len(glb)
        second, job, attempt = await leased(coord, tmp_path, "bob")
        second_header = second.header(job, attempt, [("glb", glb)])
        await second.send(second_header)
        assert first.ws is not None and second.ws is not None
        await first.ws.send(next(iter_chunks(first_header.stream, glb, 64)))
        await second.ws.send(next(iter_chunks(second_header.stream, glb, 64)))

        async def one_each() -> bool:
            return coord.farm.upload_memory.used == len(glb) and len(incoming(coord)) == 1

        await wait_for(one_each, 10, "one upload in memory, the other on disk")
        for agent, header in ((first, first_header), (second, second_header)):
            assert agent.ws is not None
            for frame in list(iter_chunks(header.stream, glb, 64))[1:]:
                await agent.ws.send(frame)
            assert (await agent.expect(ResultAck)).status == "stored"
            await agent.close()
        assert await released(coord)


# --------------------------------------------------------------------------
# item 8: measured generation time, previews re-encoded


async def test_claimed_generation_time_is_not_trusted(tmp_path: Path) -> None:
    async with coordinator(tmp_path) as coord:
        agent, job, attempt = await leased(coord, tmp_path)
        ack = await agent.upload(job, attempt, [("glb", tetrahedron_glb(1))], seconds=1e7)
        assert ack.status == "stored"
        result = await row(coord, models.Result, job)
        agent_row = await row(coord, models.Agent, agent.token.split(".")[1])
        assert 0 <= result.seconds < 30, result.seconds
        assert 0 <= agent_row.gpu_seconds < 30, agent_row.gpu_seconds
        async with coord.farm.sessions() as db:
            totals = await stats.totals(coord.farm, db)
        assert totals.gpu_seconds < 30, totals.gpu_seconds
        await agent.close()


def png(size: tuple[int, int] = (8, 6), text: str = "") -> bytes:
    image = Image.new("RGBA", size, (200, 30, 10, 255))
    info = PngImagePlugin.PngInfo()
    if text:
        info.add_text("Comment", text)
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=info)
    return out.getvalue()


async def preview_response(coord: RunningCoordinator, job: str) -> httpx.Response:
    async with coord.farm.sessions() as db:
        found = await db.get(models.Job, job)
        assert found is not None
        found.public = True  # anyone may look: the route is reached without a session
        await db.commit()
    async with httpx.AsyncClient(base_url=coord.http, timeout=30) as client:
        return await client.get(f"/jobs/{job}/preview.png")


@pytest.mark.parametrize(
    "preview",
    [b"<html><script>alert(document.cookie)</script></html>", png_bomb()],
    ids=["html", "bomb-20000x20000"],
)
async def test_preview_that_is_not_an_acceptable_png_is_dropped(
    tmp_path: Path, preview: bytes
) -> None:
    async with coordinator(tmp_path) as coord:
        agent, job, attempt = await leased(coord, tmp_path)
        parts = [("glb", tetrahedron_glb(2)), ("preview", preview)]
        ack = await agent.upload(job, attempt, parts)
        assert ack.status == "stored"  # the model itself is fine
        assert not (await row(coord, models.Result, job)).has_preview
        assert not coord.farm.store.exists(job, "png")
        response = await preview_response(coord, job)
        assert response.status_code == 404
        assert response.headers.get("content-type") != "image/png"
        await agent.close()


async def test_valid_preview_is_re_encoded_without_its_metadata(tmp_path: Path) -> None:
    async with coordinator(tmp_path) as coord:
        agent, job, attempt = await leased(coord, tmp_path)
        sent = png(text="<script>x</script>") + b"trailing junk"
        ack = await agent.upload(job, attempt, [("glb", tetrahedron_glb(2)), ("preview", sent)])
        assert ack.status == "stored"
        response = await preview_response(coord, job)
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
        served = response.content
        assert served != sent and b"<script>" not in served and b"junk" not in served
        image = Image.open(io.BytesIO(served))
        assert image.format == "PNG" and image.size == (8, 6)
        assert image.convert("RGBA").getpixel((3, 3)) == (200, 30, 10, 255)
        await agent.close()
