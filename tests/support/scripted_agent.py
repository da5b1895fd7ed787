"""A hand-driven agent for protocol-level integration tests (real WebSocket, no generator)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any, TypeVar

from websockets.asyncio.client import ClientConnection, connect

from agent.instant import tetrahedron_glb
from protocol import (
    SUPPORTED_VERSIONS,
    Capabilities,
    CoordinatorMessage,
    Hello,
    Result,
    decode_from_coordinator,
    describe,
    encode,
    iter_chunks,
)
from protocol.limits import MAX_STEPS
from protocol.messages import AgentMessage

M = TypeVar("M", bound=CoordinatorMessage)
_streams = itertools.count(1)


class ScriptedAgent:
    def __init__(
        self,
        url: str,
        token: str,
        versions: tuple[int, ...] = SUPPORTED_VERSIONS,
        **caps: Any,
    ) -> None:
        self.url = url
        self.token = token
        self.versions = versions  # e.g. (1, 2): an agent from before mesh options
        self.caps = Capabilities(**{"max_steps": MAX_STEPS, **caps})
        self.ws: ClientConnection | None = None
        self.frames: list[str | bytes] = []  # every frame received, as it came

    async def connect(self, holding: tuple[tuple[str, int], ...] = ()) -> Any:
        self.ws = await connect(self.url, max_size=2**22)
        await self.send(
            Hello(
                token=self.token,
                versions=self.versions,
                agent_version="scripted",
                capabilities=self.caps,
                holding=holding,
            )
        )
        return await self.expect(object)  # welcome or error

    async def send(self, message: AgentMessage) -> None:
        assert self.ws is not None
        await self.ws.send(encode(message))

    async def recv(self, within: float = 10.0) -> CoordinatorMessage:
        assert self.ws is not None
        async with asyncio.timeout(within):
            frame = await self.ws.recv()
        self.frames.append(frame)
        return decode_from_coordinator(frame)

    async def expect(self, kind: type[M] | type[object], within: float = 10.0) -> Any:
        """The next message of ``kind``, skipping others (e.g. stray cancels)."""
        async with asyncio.timeout(within):
            while True:
                message = await self.recv(within)
                if isinstance(message, kind):
                    return message

    async def upload(
        self, job: str, attempt: int, glb: bytes | None = None, chunk: int = 4096
    ) -> None:
        """Send a result header and its chunks for a (valid by default) GLB."""
        assert self.ws is not None
        data = glb if glb is not None else tetrahedron_glb(7)
        stream = next(_streams)
        await self.send(
            Result(
                job=job,
                attempt=attempt,
                stream=stream,
                artifacts=describe([("glb", data)]),
                vertices=4,
                faces=4,
            )
        )
        for frame in iter_chunks(stream, data, chunk):
            await self.ws.send(frame)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
            self.ws = None
