"""(v3) An image job's input image, coordinator → agent, in binary chunk frames.

An ``assign`` whose jobs carry an :class:`~protocol.messages.ImageRef` (all of
them the same one: the coordinator batches only image jobs of one image) is
followed at once, before any other message, by that image's bytes as chunk
frames of :mod:`protocol.frames` on stream :data:`IMAGE_STREAM`, each payload at
most :data:`~protocol.limits.IMAGE_CHUNK_BYTES`. The agent counts them against
the announced size (at most :data:`~protocol.limits.MAX_IMAGE_BYTES`), checks
the offsets, and verifies the sha256 before any job of the batch runs.

A framing error (a gap, an overrun, a frame of another stream, a text message
before the image is complete) is a protocol error of the coordinator. A sha256
mismatch is not: the bytes arrived in order but are not the announced image,
so the agent fails those jobs (retryable) and the connection carries on.
"""

from __future__ import annotations

from collections.abc import Iterator

from protocol.errors import ProtocolError
from protocol.frames import HEADER_BYTES, Assembler, BufferSink, iter_chunks, unpack_chunk
from protocol.limits import IMAGE_CHUNK_BYTES, MAX_IMAGE_BYTES
from protocol.messages import ImageRef

IMAGE_STREAM = 1
"""The stream number of an input image's chunk frames (one image per ``assign``)."""


def image_frames(data: bytes, chunk_bytes: int = IMAGE_CHUNK_BYTES) -> Iterator[bytes]:
    """The chunk frames that carry ``data`` (an assign's input image) to the agent."""
    if len(data) > MAX_IMAGE_BYTES:
        raise ValueError(f"an image of {len(data)} bytes exceeds {MAX_IMAGE_BYTES}")
    return iter_chunks(IMAGE_STREAM, data, min(chunk_bytes, IMAGE_CHUNK_BYTES))


class ImageInbox:
    """The agent's receiver of one assign's input image (sans-I/O).

    :meth:`feed` takes each binary frame and returns True once every byte has
    arrived; :meth:`finish` then gives the bytes, or None if their sha256 is
    not the announced one. Bytes are kept in memory, bounded by the ref's size.
    """

    def __init__(self, ref: ImageRef) -> None:
        self.ref = ref
        self._sink = BufferSink()
        self._assembler = Assembler(
            IMAGE_STREAM, (ref,), MAX_IMAGE_BYTES, self._sink, peer="coordinator"
        )

    @property
    def complete(self) -> bool:
        return self._assembler.complete

    def feed(self, frame: bytes) -> bool:
        if len(frame) > IMAGE_CHUNK_BYTES + HEADER_BYTES:
            raise ProtocolError(
                f"image frame of {len(frame)} bytes exceeds {IMAGE_CHUNK_BYTES} plus its header",
                code="too_big",
                peer="coordinator",
            )
        self._assembler.feed(unpack_chunk(frame, peer="coordinator"))
        return self._assembler.complete

    def finish(self) -> bytes | None:
        """The verified bytes; None if they are not the announced image."""
        try:
            self._assembler.finish()
        except ProtocolError as exc:
            if exc.code == "bad_checksum":
                return None
            raise
        return bytes(self._sink.data)
