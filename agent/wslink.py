"""The agent's side of one welcomed connection, as the runner sees it (sends and result
uploads), and what the agent advertises in ``hello``."""

from __future__ import annotations

from typing import Any

from websockets.asyncio.client import ClientConnection

from agent.models import advertised_models
from agent.settings import AgentSettings
from agent.spool import SpooledResult
from protocol import (
    AgentMessage,
    AgentSession,
    Artifact,
    Capabilities,
    Limits,
    Result,
    describe,
    encode,
    iter_chunks,
)
from protocol.frames import HEADER_BYTES, is_artifact_kind


def capabilities_for(
    device_info: Any, settings: AgentSettings, *, max_steps: int = 64
) -> Capabilities:
    """What ``hello`` advertises, from the loaded generator's device and the settings."""
    return Capabilities(
        device=str(device_info.device)[:200],
        gpu_name=str(device_info.gpu_name)[:200],
        vram_mb=max(int(device_info.vram_mb), 0),
        models=advertised_models(settings.model),
        max_batch=settings.max_batch,
        max_steps=max_steps,
        formats=("glb", "preview"),
    )


class WebSocketLink:
    """The runner's view of one welcomed connection."""

    def __init__(self, ws: ClientConnection, session: AgentSession, limits: Limits) -> None:
        self.ws = ws
        self.session = session
        self.limits = limits
        self._streams = 0
        # A chunk frame must fit the coordinator's frame limit, header included.
        self._chunk_bytes = max(1, min(limits.chunk_bytes, limits.max_frame_bytes - HEADER_BYTES))

    @property
    def controls(self) -> bool:
        """Protocol v2: the owner controls' ``status`` and ``declined`` may be sent."""
        return self.session.speaks(2)

    async def send(self, message: AgentMessage) -> None:
        await self.ws.send(encode(self.session.send(message)))

    async def upload(self, result: SpooledResult) -> None:
        self._streams += 1
        header = Result(
            job=result.job,
            attempt=result.attempt,
            stream=self._streams,
            artifacts=artifacts(result),
            vertices=result.vertices,
            faces=result.faces,
            seconds=min(result.seconds, 1e7),
        )
        await self.send(header)
        parts = [payload for _, payload in result.artifacts]
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        for frame in iter_chunks(self._streams, data, self._chunk_bytes):
            await self.ws.send(frame)


def artifacts(result: SpooledResult) -> tuple[Artifact, ...]:
    """The upload's artifact descriptors; the spool's digests when it has them (hashing
    a MiB again cost more than the rest of the upload's framing)."""
    if len(result.digests) != len(result.artifacts):
        return describe(result.artifacts)
    found: list[Artifact] = []
    for (kind, data), digest in zip(result.artifacts, result.digests, strict=True):
        if not is_artifact_kind(kind):
            return describe(result.artifacts)  # raises the ValueError describe gives
        found.append(Artifact(kind=kind, size=len(data), sha256=digest))
    return tuple(found)
