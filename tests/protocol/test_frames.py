"""Binary chunk frames and the Assembler that checks an upload against its header."""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import (
    Artifact,
    Assembler,
    BufferSink,
    Chunk,
    ProtocolError,
    describe,
    iter_chunks,
    pack_chunk,
    split,
    unpack_chunk,
)
from protocol.frames import FRAME_VERSION, HEADER_BYTES, MAGIC

PROPERTY = settings(max_examples=150, deadline=None)


def assert_bad(code: str, excinfo: pytest.ExceptionInfo[ProtocolError]) -> None:
    assert excinfo.value.code == code, str(excinfo.value)
    assert excinfo.value.peer == "agent"


def assembler_for(*parts: bytes, stream: int = 7, max_bytes: int = 1 << 20) -> Assembler:
    return Assembler(stream, describe([("glb", p) for p in parts]), max_bytes, BufferSink())


def finished(assembler: Assembler) -> list[bytes]:
    """Finish the upload and return what its (in-memory) sink received, per artifact."""
    assembler.finish()
    assert isinstance(assembler.sink, BufferSink) and assembler.sink.closed
    return split(assembler.sink.data, assembler.artifacts)


# --------------------------------------------------------------------------
# pack / unpack


def test_frames_header_is_sixteen_bytes_big_endian() -> None:
    assert HEADER_BYTES == 16
    frame = pack_chunk(0x01020304, 0x0A0B0C0D0E0F1011, b"xyz")
    assert frame == (
        b"SFC"
        + bytes([FRAME_VERSION])
        + bytes.fromhex("01020304")
        + bytes.fromhex("0a0b0c0d0e0f1011")
        + b"xyz"
    )
    assert MAGIC == b"SFC" and FRAME_VERSION == 1


def test_frames_pack_unpack_round_trip() -> None:
    assert unpack_chunk(pack_chunk(9, 4096, b"payload")) == Chunk(9, 4096, b"payload")


def test_frames_header_only_frame_has_empty_payload() -> None:
    assert unpack_chunk(pack_chunk(1, 0, b"")) == Chunk(1, 0, b"")


def test_frames_unpack_accepts_bytearray_and_copies_payload() -> None:
    frame = bytearray(pack_chunk(1, 0, b"abc"))
    chunk = unpack_chunk(frame)  # type: ignore[arg-type]
    frame[-1] = ord("X")
    assert chunk.payload == b"abc"
    assert isinstance(chunk.payload, bytes)


@pytest.mark.parametrize("length", [0, 1, 3, 15])
def test_frames_unpack_rejects_short_frame(length: int) -> None:
    with pytest.raises(ProtocolError) as info:
        unpack_chunk(pack_chunk(1, 0, b"")[:length])
    assert_bad("bad_chunk", info)


@pytest.mark.parametrize(
    "header",
    [
        b"SFD\x01",
        b"sfc\x01",
        b"\x00\x00\x00\x01",
        b"SFC\x00",
        b"SFC\x02",
        b'{"ty',  # a JSON control message sent as a binary frame
    ],
)
def test_frames_unpack_rejects_bad_magic_or_version(header: bytes) -> None:
    frame = header + pack_chunk(1, 0, b"data")[4:]
    with pytest.raises(ProtocolError) as info:
        unpack_chunk(frame)
    assert_bad("bad_chunk", info)


@PROPERTY
@given(
    st.integers(min_value=0, max_value=2**32 - 1),
    st.integers(min_value=0, max_value=2**64 - 1),
    st.binary(max_size=64),
)
def test_frames_pack_unpack_identity(stream: int, offset: int, payload: bytes) -> None:
    frame = pack_chunk(stream, offset, payload)
    assert len(frame) == HEADER_BYTES + len(payload)
    assert unpack_chunk(frame) == Chunk(stream, offset, payload)


@PROPERTY
@given(st.binary(max_size=64))
def test_frames_unpack_arbitrary_bytes_raises_only_protocol_error(data: bytes) -> None:
    try:
        chunk = unpack_chunk(data)
    except ProtocolError as exc:
        assert exc.code == "bad_chunk"
    else:
        assert pack_chunk(chunk.stream, chunk.offset, chunk.payload) == data


# --------------------------------------------------------------------------
# iter_chunks and describe


def test_frames_iter_chunks_splits_at_chunk_bytes() -> None:
    chunks = [unpack_chunk(f) for f in iter_chunks(3, b"abcdefg", 3)]
    assert chunks == [Chunk(3, 0, b"abc"), Chunk(3, 3, b"def"), Chunk(3, 6, b"g")]


def test_frames_iter_chunks_of_nothing_is_no_frames() -> None:
    assert list(iter_chunks(1, b"", 10)) == []


@pytest.mark.parametrize("chunk_bytes", [0, -1])
def test_frames_iter_chunks_rejects_non_positive_chunk_size(chunk_bytes: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        list(iter_chunks(1, b"abc", chunk_bytes))


def test_frames_describe_gives_size_and_sha256_in_order() -> None:
    artifacts = describe([("glb", b"glTF"), ("preview", b"")])
    assert artifacts == (
        Artifact(kind="glb", size=4, sha256=hashlib.sha256(b"glTF").hexdigest()),
        Artifact(kind="preview", size=0, sha256=hashlib.sha256(b"").hexdigest()),
    )


# --------------------------------------------------------------------------
# Assembler


def test_frames_assembler_reassembles_two_artifacts() -> None:
    assembler = assembler_for(b"hello ", b"world")
    assert assembler.expected == 11 and not assembler.complete
    for frame in iter_chunks(7, b"hello world", 4):
        assembler.feed(unpack_chunk(frame))
    assert assembler.complete and assembler.received == 11
    assert finished(assembler) == [b"hello ", b"world"]


def test_frames_assembler_zero_size_is_complete_at_once() -> None:
    assembler = assembler_for(b"")
    assert assembler.complete
    assert finished(assembler) == [b""]


def test_frames_assembler_rejects_wrong_stream() -> None:
    assembler = assembler_for(b"abcdef", stream=7)
    with pytest.raises(ProtocolError) as info:
        assembler.feed(Chunk(8, 0, b"abc"))
    assert_bad("bad_chunk", info)


def test_frames_assembler_rejects_gap() -> None:
    assembler = assembler_for(b"abcdef")
    assembler.feed(Chunk(7, 0, b"ab"))
    with pytest.raises(ProtocolError) as info:
        assembler.feed(Chunk(7, 3, b"def"))
    assert_bad("bad_chunk", info)


@pytest.mark.parametrize("offset", [0, 1])
def test_frames_assembler_rejects_overlap_or_repeat(offset: int) -> None:
    assembler = assembler_for(b"abcdef")
    assembler.feed(Chunk(7, 0, b"ab"))
    with pytest.raises(ProtocolError) as info:
        assembler.feed(Chunk(7, offset, b"bcd"))
    assert_bad("bad_chunk", info)


def test_frames_assembler_rejects_overrun() -> None:
    assembler = assembler_for(b"abc")
    with pytest.raises(ProtocolError) as info:
        assembler.feed(Chunk(7, 0, b"abcd"))
    assert_bad("bad_chunk", info)
    assert assembler.received == 0  # nothing of the bad chunk was kept


def test_frames_assembler_rejects_chunk_after_complete() -> None:
    assembler = assembler_for(b"abc")
    assembler.feed(Chunk(7, 0, b"abc"))
    with pytest.raises(ProtocolError) as info:
        assembler.feed(Chunk(7, 3, b"d"))
    assert_bad("bad_chunk", info)


def test_frames_assembler_finish_rejects_incomplete_upload() -> None:
    assembler = assembler_for(b"abcdef")
    assembler.feed(Chunk(7, 0, b"abc"))
    with pytest.raises(ProtocolError) as info:
        assembler.finish()
    assert_bad("bad_chunk", info)


def test_frames_assembler_rejects_sha256_mismatch() -> None:
    good = describe([("glb", b"abc"), ("preview", b"xyz")])
    assembler = Assembler(7, good, 100)
    assembler.feed(Chunk(7, 0, b"abcxyZ"))  # right size, last artifact corrupted
    with pytest.raises(ProtocolError) as info:
        assembler.finish()
    assert_bad("bad_checksum", info)
    assert "preview" in str(info.value)


def test_frames_assembler_rejects_bytes_shifted_between_artifacts() -> None:
    # Total size and content match, but the split does not: both checksums fail.
    artifacts = (
        Artifact(kind="glb", size=2, sha256=hashlib.sha256(b"abc").hexdigest()),
        Artifact(kind="preview", size=4, sha256=hashlib.sha256(b"xyz").hexdigest()),
    )
    assembler = Assembler(7, artifacts, 100)
    assembler.feed(Chunk(7, 0, b"abcxyz"))
    with pytest.raises(ProtocolError) as info:
        assembler.finish()
    assert_bad("bad_checksum", info)


def test_frames_assembler_rejects_upload_over_limit() -> None:
    with pytest.raises(ProtocolError) as info:
        assembler_for(b"a" * 10, b"b" * 11, max_bytes=20)
    assert_bad("too_big", info)


def test_frames_assembler_limit_is_inclusive() -> None:
    assert assembler_for(b"a" * 10, b"b" * 10, max_bytes=20).expected == 20


def test_frames_assembler_limit_applies_to_announced_not_sent_size() -> None:
    # A hostile header announcing 1 TiB is refused before any byte is buffered.
    huge = Artifact(kind="glb", size=2**40, sha256="0" * 64)
    with pytest.raises(ProtocolError) as info:
        Assembler(1, (huge,), 1 << 30)
    assert_bad("too_big", info)


@PROPERTY
@given(
    st.lists(st.binary(max_size=300), min_size=1, max_size=4),
    st.integers(min_value=1, max_value=400),
    st.integers(min_value=1, max_value=2**32 - 1),
)
def test_frames_iter_chunks_and_assembler_reassemble_anything(
    parts: list[bytes], chunk_bytes: int, stream: int
) -> None:
    artifacts = describe([("glb", p) for p in parts])
    assembler = Assembler(stream, artifacts, sum(map(len, parts)), BufferSink())
    frames = list(iter_chunks(stream, b"".join(parts), chunk_bytes))
    total = sum(map(len, parts))
    assert len(frames) == -(-total // chunk_bytes)
    for frame in frames:
        assert not assembler.complete
        assert len(frame) <= HEADER_BYTES + chunk_bytes
        assembler.feed(unpack_chunk(frame))
    assert assembler.complete
    assert finished(assembler) == parts


@PROPERTY
@given(st.binary(min_size=2, max_size=200), st.integers(min_value=1, max_value=50), st.data())
def test_frames_assembler_detects_any_dropped_chunk(
    data: bytes, chunk_bytes: int, draw: st.DataObject
) -> None:
    frames = list(iter_chunks(1, data, chunk_bytes))
    if len(frames) < 2:
        return
    dropped = draw.draw(st.integers(min_value=0, max_value=len(frames) - 1))
    assembler = Assembler(1, describe([("glb", data)]), len(data))
    with pytest.raises(ProtocolError) as info:
        for index, frame in enumerate(frames):
            if index != dropped:
                assembler.feed(unpack_chunk(frame))
        assembler.finish()
    assert info.value.code == "bad_chunk"


@PROPERTY
@given(st.binary(min_size=1, max_size=200), st.data())
def test_frames_assembler_detects_any_flipped_bit(data: bytes, draw: st.DataObject) -> None:
    position = draw.draw(st.integers(min_value=0, max_value=len(data) * 8 - 1))
    corrupted = bytearray(data)
    corrupted[position // 8] ^= 1 << (position % 8)
    assembler = Assembler(1, describe([("glb", data)]), len(data))
    for frame in iter_chunks(1, bytes(corrupted), 16):
        assembler.feed(unpack_chunk(frame))
    with pytest.raises(ProtocolError) as info:
        assembler.finish()
    assert info.value.code == "bad_checksum"


def test_frames_header_struct_layout_matches_docs() -> None:
    # docs/protocol.md documents ">3sBIQ": magic, version u8, stream u32, offset u64.
    magic, version, stream, offset = struct.unpack(">3sBIQ", pack_chunk(5, 6, b"")[:16])
    assert (magic, version, stream, offset) == (b"SFC", 1, 5, 6)


# --------------------------------------------------------------------------
# sinks: the assembler keeps nothing itself


class RecordingSink:
    """Records calls, keeps no bytes."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.events: list[str] = []

    def write(self, data: bytes) -> None:
        self.sizes.append(len(data))

    def close(self) -> None:
        self.events.append("close")

    def abort(self) -> None:
        self.events.append("abort")


def test_frames_assembler_streams_each_payload_to_the_sink_and_closes_it() -> None:
    data = b"0123456789" * 10
    sink = RecordingSink()
    assembler = Assembler(3, describe([("glb", data[:37]), ("preview", data[37:])]), 100, sink)
    for frame in iter_chunks(3, data, 16):
        assembler.feed(unpack_chunk(frame))
    assembler.finish()
    assert sink.sizes == [16] * 6 + [4] and sink.events == ["close"]


@pytest.mark.parametrize("fault", ["gap", "overrun", "stream", "checksum", "incomplete"])
def test_frames_assembler_aborts_the_sink_on_any_error(fault: str) -> None:
    data = b"abcdef"
    sink = RecordingSink()
    sha = "0" * 64 if fault == "checksum" else hashlib.sha256(data).hexdigest()
    assembler = Assembler(7, (Artifact(kind="glb", size=6, sha256=sha),), 100, sink)
    chunk = {
        "gap": Chunk(7, 1, b"bc"),
        "overrun": Chunk(7, 0, b"abcdefg"),
        "stream": Chunk(8, 0, b"ab"),
        "checksum": Chunk(7, 0, data),
        "incomplete": Chunk(7, 0, b"abc"),
    }[fault]
    with pytest.raises(ProtocolError):
        assembler.feed(chunk)
        assembler.finish()
    assert sink.events == ["abort"] and assembler.sink is None


def test_frames_assembler_without_sink_counts_and_verifies_only() -> None:
    data = b"x" * 1000
    assembler = Assembler(1, describe([("glb", data)]), 1000)
    for frame in iter_chunks(1, data, 100):
        assembler.feed(unpack_chunk(frame))
    assembler.finish()
    assert assembler.received == 1000 and assembler.sink is None


@PROPERTY
@given(st.lists(st.binary(max_size=200), min_size=1, max_size=4), st.integers(1, 300))
def test_frames_assembler_hashes_artifacts_split_anywhere(parts: list[bytes], chunk: int) -> None:
    # sha256 is computed as bytes pass, so chunk boundaries must not matter.
    assembler = Assembler(1, describe([("glb", p) for p in parts]), 1 << 20)
    for frame in iter_chunks(1, b"".join(parts), chunk):
        assembler.feed(unpack_chunk(frame))
    assembler.finish()


def test_describe_refuses_an_unknown_artifact_kind() -> None:
    with pytest.raises(ValueError, match="unknown artifact kind 'obj'"):
        describe([("glb", b"glTF"), ("obj", b"v 0 0 0")])
