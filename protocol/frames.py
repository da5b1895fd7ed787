"""Binary chunk framing for result uploads.

A chunk frame is a 16-byte header followed by payload bytes::

    magic  b"SFC"   3 bytes
    ver    u8       1 byte   (FRAME_VERSION)
    stream u32 BE   4 bytes  (the ``stream`` of the preceding ``result`` header)
    offset u64 BE   8 bytes  (position of the payload in the concatenated artifacts)

Chunks of one stream arrive in order; the offset lets the receiver detect a
lost, repeated or reordered chunk instead of silently corrupting a model.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from protocol.errors import ProtocolError
from protocol.messages import Artifact

MAGIC = b"SFC"
FRAME_VERSION = 1
_HEADER = struct.Struct(">3sBIQ")
HEADER_BYTES = _HEADER.size


@dataclass(frozen=True, slots=True)
class Chunk:
    stream: int
    offset: int
    payload: bytes


def pack_chunk(stream: int, offset: int, payload: bytes) -> bytes:
    return _HEADER.pack(MAGIC, FRAME_VERSION, stream, offset) + payload


def unpack_chunk(frame: bytes) -> Chunk:
    if len(frame) < HEADER_BYTES:
        raise ProtocolError(
            f"binary frame of {len(frame)} bytes is shorter than its header",
            code="bad_chunk",
            peer="agent",
        )
    magic, version, stream, offset = _HEADER.unpack_from(frame)
    if magic != MAGIC or version != FRAME_VERSION:
        raise ProtocolError(
            "binary frame has a bad magic or version", code="bad_chunk", peer="agent"
        )
    return Chunk(stream, offset, bytes(frame[HEADER_BYTES:]))


def iter_chunks(stream: int, data: bytes, chunk_bytes: int) -> Iterator[bytes]:
    """Split ``data`` into packed chunk frames of at most ``chunk_bytes`` payload."""
    if chunk_bytes < 1:
        raise ValueError("chunk_bytes must be positive")
    view = memoryview(data)
    for offset in range(0, len(data), chunk_bytes):
        yield pack_chunk(stream, offset, bytes(view[offset : offset + chunk_bytes]))


def describe(kind_and_data: Sequence[tuple[str, bytes]]) -> tuple[Artifact, ...]:
    """Artifact descriptors (size, sha256) for the byte strings to upload, in order."""
    return tuple(
        Artifact(kind=kind, size=len(data), sha256=hashlib.sha256(data).hexdigest())  # type: ignore[arg-type]
        for kind, data in kind_and_data
    )


class Assembler:
    """Receives the chunks of one upload and checks them against the header.

    Raises :class:`ProtocolError` on a chunk for another stream, a gap or
    overlap, or bytes past the announced size; :meth:`finish` verifies every
    artifact's sha256 and returns the artifacts' bytes.
    """

    def __init__(self, stream: int, artifacts: Sequence[Artifact], max_bytes: int) -> None:
        self.stream = stream
        self.artifacts = tuple(artifacts)
        self.expected = sum(a.size for a in self.artifacts)
        if self.expected > max_bytes:
            raise ProtocolError(
                f"upload of {self.expected} bytes exceeds the limit of {max_bytes}",
                code="too_big",
                peer="agent",
            )
        self._buffer = bytearray()

    @property
    def received(self) -> int:
        return len(self._buffer)

    @property
    def complete(self) -> bool:
        return self.received == self.expected

    def feed(self, chunk: Chunk) -> None:
        if chunk.stream != self.stream:
            raise ProtocolError(
                f"chunk for stream {chunk.stream} while receiving {self.stream}",
                code="bad_chunk",
                peer="agent",
            )
        if chunk.offset != self.received:
            raise ProtocolError(
                f"chunk at offset {chunk.offset}, expected {self.received}",
                code="bad_chunk",
                peer="agent",
            )
        if self.received + len(chunk.payload) > self.expected:
            raise ProtocolError(
                "chunk runs past the announced size", code="bad_chunk", peer="agent"
            )
        self._buffer += chunk.payload

    def finish(self) -> list[bytes]:
        if not self.complete:
            raise ProtocolError(
                f"upload incomplete: {self.received} of {self.expected} bytes",
                code="bad_chunk",
                peer="agent",
            )
        parts: list[bytes] = []
        offset = 0
        for artifact in self.artifacts:
            data = bytes(self._buffer[offset : offset + artifact.size])
            offset += artifact.size
            if hashlib.sha256(data).hexdigest() != artifact.sha256:
                raise ProtocolError(
                    f"sha256 mismatch for the {artifact.kind} artifact",
                    code="bad_checksum",
                    peer="agent",
                )
            parts.append(data)
        return parts
