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
import itertools
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeGuard, get_args

from protocol.errors import Peer, ProtocolError
from protocol.messages import Artifact, ArtifactKind, ImageRef

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


def unpack_chunk(frame: bytes, peer: Peer = "agent") -> Chunk:
    """A chunk frame's parts; ``peer`` (who sent it) is named in the error of a bad one."""
    if len(frame) < HEADER_BYTES:
        raise ProtocolError(
            f"binary frame of {len(frame)} bytes is shorter than its header",
            code="bad_chunk",
            peer=peer,
        )
    magic, version, stream, offset = _HEADER.unpack_from(frame)
    if magic != MAGIC or version != FRAME_VERSION:
        raise ProtocolError("binary frame has a bad magic or version", code="bad_chunk", peer=peer)
    return Chunk(stream, offset, bytes(frame[HEADER_BYTES:]))


def iter_chunks(stream: int, data: bytes, chunk_bytes: int) -> Iterator[bytes]:
    """Split ``data`` into packed chunk frames of at most ``chunk_bytes`` payload."""
    if chunk_bytes < 1:
        raise ValueError("chunk_bytes must be positive")
    view = memoryview(data)
    for offset in range(0, len(data), chunk_bytes):
        # One copy per frame: the header and the slice straight into one bytes object.
        yield (
            _HEADER.pack(MAGIC, FRAME_VERSION, stream, offset) + view[offset : offset + chunk_bytes]
        )


_ARTIFACT_KINDS: frozenset[str] = frozenset(get_args(ArtifactKind))


def is_artifact_kind(kind: str) -> TypeGuard[ArtifactKind]:
    return kind in _ARTIFACT_KINDS


def describe(kind_and_data: Sequence[tuple[str, bytes]]) -> tuple[Artifact, ...]:
    """Artifact descriptors (size, sha256) for the byte strings to upload, in order.

    ValueError for a kind the protocol does not know (e.g. from a damaged spool file)."""
    artifacts: list[Artifact] = []
    for kind, data in kind_and_data:
        if not is_artifact_kind(kind):
            raise ValueError(f"unknown artifact kind {kind!r}; one of {sorted(_ARTIFACT_KINDS)}")
        artifacts.append(
            Artifact(kind=kind, size=len(data), sha256=hashlib.sha256(data).hexdigest())
        )
    return tuple(artifacts)


class Sink(Protocol):
    """Where an upload's bytes go; the I/O layer provides it (a temp file on disk).

    ``write`` is called with each chunk's payload in order, ``close`` once all
    bytes arrived and every checksum matched, ``abort`` when the upload is
    abandoned (bad chunk, bad checksum, closed connection): the sink must then
    drop what it holds.
    """

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class BufferSink:
    """A sink in memory, for tests and tools; a server must not use it for untrusted peers."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.data += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True
        self.data.clear()


def split(data: bytes | bytearray | memoryview, artifacts: Sequence[Artifact]) -> list[bytes]:
    """The concatenated bytes of an upload cut back into its artifacts, in header order."""
    parts: list[bytes] = []
    offset = 0
    for artifact in artifacts:
        parts.append(bytes(data[offset : offset + artifact.size]))
        offset += artifact.size
    return parts


class Assembler:
    """Receives the chunks of one upload, checks them against the header, passes them on.

    Raises :class:`ProtocolError` on a chunk for another stream, a gap or
    overlap, or bytes past the announced size. The bytes go to ``sink`` as they
    arrive (nothing is kept here) and each artifact's sha256 is computed as they
    pass; with ``sink=None`` they are only counted and hashed, then dropped.
    :meth:`finish` verifies every artifact's sha256 and closes the sink; every
    error aborts it. ``peer`` is the sender: the agent for result uploads, the
    coordinator for an image job's input image (an :class:`ImageRef`).
    """

    def __init__(
        self,
        stream: int,
        artifacts: Sequence[Artifact | ImageRef],
        max_bytes: int,
        sink: Sink | None = None,
        peer: Peer = "agent",
    ) -> None:
        self.stream = stream
        self.artifacts = tuple(artifacts)
        self.peer: Peer = peer
        self.expected = sum(a.size for a in self.artifacts)
        if self.expected > max_bytes:
            raise ProtocolError(
                f"upload of {self.expected} bytes exceeds the limit of {max_bytes}",
                code="too_big",
                peer=peer,
            )
        self.sink = sink
        self.received = 0
        self._digests = [hashlib.sha256() for _ in self.artifacts]
        # Where each artifact ends in the concatenated bytes.
        self._ends = list(itertools.accumulate(a.size for a in self.artifacts))

    @property
    def complete(self) -> bool:
        return self.received == self.expected

    def abort(self) -> None:
        """Drop the upload: the sink discards what it was given."""
        if self.sink is not None:
            sink, self.sink = self.sink, None
            sink.abort()

    def _fail(self, message: str, code: str) -> ProtocolError:
        self.abort()
        return ProtocolError(message, code=code, peer=self.peer)

    def feed(self, chunk: Chunk) -> None:
        if chunk.stream != self.stream:
            raise self._fail(
                f"chunk for stream {chunk.stream} while receiving {self.stream}", "bad_chunk"
            )
        if chunk.offset != self.received:
            raise self._fail(
                f"chunk at offset {chunk.offset}, expected {self.received}", "bad_chunk"
            )
        if self.received + len(chunk.payload) > self.expected:
            raise self._fail("chunk runs past the announced size", "bad_chunk")
        self._hash(chunk.payload)
        if self.sink is not None:
            self.sink.write(chunk.payload)
        self.received += len(chunk.payload)

    def _hash(self, payload: bytes) -> None:
        view = memoryview(payload)
        position = self.received
        for index, end in enumerate(self._ends):
            if not view:
                break
            if position >= end:
                continue
            take = min(len(view), end - position)
            self._digests[index].update(view[:take])
            view, position = view[take:], position + take

    def finish(self) -> None:
        if not self.complete:
            raise self._fail(
                f"upload incomplete: {self.received} of {self.expected} bytes", "bad_chunk"
            )
        for artifact, digest in zip(self.artifacts, self._digests, strict=True):
            if digest.hexdigest() != artifact.sha256:
                what = artifact.kind if isinstance(artifact, Artifact) else "image"
                raise self._fail(f"sha256 mismatch for the {what} artifact", "bad_checksum")
        if self.sink is not None:
            self.sink.close()
