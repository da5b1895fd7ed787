"""Test doubles for the agent: a generator without torch and a scripted coordinator."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from agent.batches import GeneratorTypes
from agent.generation import DeviceInfo, GenerationRequest, GenerationResult, ProgressEvent
from agent.generator import GeneratorConfig
from protocol import (
    AgentMessage,
    CoordinatorMessage,
    CoordinatorSession,
    Heartbeat,
    Hello,
    Limits,
    ProtocolError,
    Upload,
    Welcome,
    decode_from_agent,
    encode,
)

TIMEOUT_S = 10.0
T = TypeVar("T")


# ---------------------------------------------------------------------------- generator
# The real (torch-free) value types, so the fakes cannot drift from them.
FakeRequest = GenerationRequest
FakeEvent = ProgressEvent
FakeResult = GenerationResult


def FakeDeviceInfo() -> DeviceInfo:
    return DeviceInfo("cuda:0", "Fake RTX 9090", 24576, "float16")


class FakeCancelledError(Exception):
    pass


class FakeGenerationError(Exception):
    pass


FAKE_TYPES = GeneratorTypes(FakeRequest, FakeCancelledError, FakeGenerationError)


def glb_for(request: FakeRequest) -> bytes:
    # Long enough to need several 64-byte chunks.
    return b"glTF" + (request.prompt.encode() + b"|") * 40


def preview_for(request: FakeRequest) -> bytes:
    return b"\x89PNG" + request.job_id.encode() * 3


class FakeGenerator:
    """Same interface as agent.generator.Generator; records calls and can block or fail.

    With ``gate`` set, every call pauses after its first sampling step until the
    gate opens or ``should_stop()`` turns true (then it raises the cancel error).
    """

    def __init__(
        self,
        *,
        steps: int = 4,
        gate: threading.Event | None = None,
        fail: BaseException | None = None,
        preview: bool = True,
    ) -> None:
        self.steps = steps
        self.gate = gate
        self.fail = fail
        self.preview = preview
        self.device_info = FakeDeviceInfo()
        self.calls: list[list[FakeRequest]] = []
        self.started = threading.Event()
        self.stop_observed = threading.Event()

    def batch_key(self, request: FakeRequest) -> tuple[Any, ...]:
        if request.steps > 500:
            raise ValueError("too many steps")
        return (request.guidance_scale, request.steps)

    def _check_stop(self, should_stop: Callable[[], bool]) -> None:
        if should_stop():
            self.stop_observed.set()
            raise FakeCancelledError("stopped")

    def generate(
        self,
        requests: Sequence[FakeRequest],
        progress: Callable[[FakeEvent], None],
        should_stop: Callable[[], bool],
    ) -> list[FakeResult]:
        self.calls.append(list(requests))
        self.started.set()
        if self.fail is not None:
            raise self.fail
        ids = tuple(r.job_id for r in requests)
        for step in range(1, self.steps + 1):
            self._check_stop(should_stop)
            progress(FakeEvent(ids, "sampling", step, self.steps, eta_s=float(self.steps - step)))
            if step == 1 and self.gate is not None:
                while not self.gate.wait(0.005):
                    self._check_stop(should_stop)
        progress(FakeEvent(ids, "decoding", 1, 1))
        return [
            FakeResult(
                r.job_id,
                glb_for(r),
                preview_for(r) if self.preview else None,
                vertices=8,
                faces=12,
                seconds=0.5,
            )
            for r in requests
        ]


# ---------------------------------------------------------------------------- coordinator


def limits(chunk_bytes: int = 64) -> Limits:
    return Limits(max_frame_bytes=1 << 20, max_result_bytes=1 << 24, chunk_bytes=chunk_bytes)


def welcome(heartbeat_s: float = 30.0, **kwargs: Any) -> Welcome:
    values: dict[str, Any] = {
        "agent_id": "agent-1",
        "version": 1,
        "heartbeat_s": heartbeat_s,
        "lease_s": 60.0,
        "limits": limits(),
    }
    values.update(kwargs)
    return Welcome(**values)


@dataclass
class Peer:
    """The coordinator's end of one agent connection, driven by the test."""

    ws: ServerConnection
    session: CoordinatorSession = field(default_factory=lambda: CoordinatorSession(1 << 24))
    inbox: asyncio.Queue[AgentMessage | Upload | Exception] = field(default_factory=asyncio.Queue)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int | None = None

    async def send(self, message: CoordinatorMessage) -> None:
        await self.ws.send(encode(self.session.send(message)))

    async def next(self, *, skip: tuple[type, ...] = (Heartbeat,)) -> AgentMessage | Upload:
        async with asyncio.timeout(TIMEOUT_S):
            while True:
                item = await self.inbox.get()
                if isinstance(item, Exception):
                    raise item
                if not isinstance(item, skip):
                    return item

    async def expect(self, kind: type[T], *, skip: tuple[type, ...] = (Heartbeat,)) -> T:
        item = await self.next(skip=skip)
        assert isinstance(item, kind), f"expected {kind.__name__}, got {item!r}"
        return item

    async def handshake(self, message: Welcome | None = None) -> Hello:
        hello = await self.expect(Hello)
        # Like coordinator/link/agentlink.py: a reconnecting agent's named work is held
        # again (the coordinator keeps only uploads of held assignments).
        self.session.held.update(hello.holding)
        await self.send(message or welcome())
        return hello

    async def wait_closed(self) -> int | None:
        async with asyncio.timeout(TIMEOUT_S):
            await self.closed.wait()
        return self.close_code


class ScriptedCoordinator:
    """A loopback WebSocket server; each agent connection appears on :attr:`peers`."""

    def __init__(self) -> None:
        self.peers: asyncio.Queue[Peer] = asyncio.Queue()
        self._server: Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = next(iter(self._server.sockets)).getsockname()[:2]
        return f"ws://{host}:{port}/agent/ws"

    async def __aenter__(self) -> ScriptedCoordinator:
        self._server = await serve(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def next_peer(self) -> Peer:
        async with asyncio.timeout(TIMEOUT_S):
            return await self.peers.get()

    async def _handle(self, ws: ServerConnection) -> None:
        peer = Peer(ws)
        self.peers.put_nowait(peer)
        try:
            async for data in ws:
                try:
                    if isinstance(data, bytes):
                        upload = peer.session.receive_chunk(data)
                        if upload is not None:
                            peer.inbox.put_nowait(upload)
                        continue
                    message = peer.session.receive(decode_from_agent(data))
                    peer.inbox.put_nowait(message)
                    if (upload := peer.session.empty_upload()) is not None:
                        peer.inbox.put_nowait(upload)
                except ProtocolError as exc:
                    peer.inbox.put_nowait(exc)
        except ConnectionClosed:
            pass
        finally:
            peer.close_code = ws.close_code
            peer.closed.set()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# Small grid and preview keep the whole suite to seconds on a CPU.
TINY_CONFIG = GeneratorConfig(
    model="tiny", device="cpu", offline=True, max_batch=4, frame_size=24, preview_size=64
)
