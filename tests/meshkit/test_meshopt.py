"""meshkit.meshopt: the EXT_meshopt_compression encoders, decoded back by two decoders
that share nothing with them: a plain one written from the specification
(tests/support/meshopt_reference.py) and meshoptimizer's own, the one the viewer runs."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from meshkit.meshopt import encode_attributes, encode_indices, max_block_elements
from tests.support.meshopt_reference import DecodeError, decode_attributes, decode_indices

ROOT = Path(__file__).resolve().parents[2]
rng = np.random.default_rng(7)


def _smooth(count: int, stride: int, step: int = 2) -> NDArray[np.uint8]:
    """Slowly varying bytes, like quantized positions of neighbouring vertices."""
    walk = np.cumsum(rng.integers(-step, step + 1, size=(count, stride)), axis=0)
    return (walk % 256).astype(np.uint8)


def _cases() -> list[tuple[str, NDArray[np.uint8]]]:
    cases = []
    for stride in (4, 8, 12, 16, 64, 256):
        block = max_block_elements(stride)
        for count in (1, 15, 16, 17, block - 1, block, block + 1, 2 * block + 5):
            cases.append((f"random-{stride}x{count}", rng.integers(0, 256, (count, stride))))
            cases.append((f"smooth-{stride}x{count}", _smooth(count, stride)))
    cases.append(("zeros", np.zeros((300, 8), np.uint8)))
    cases.append(("constant", np.full((300, 8), 77, np.uint8)))
    # Deltas of exactly the sentinels and one past them: 2-bit 3, 4-bit 15.
    edge = np.zeros((64, 4), np.uint8)
    edge[1::2] = [2, 3, 7, 8]  # zigzag 4, 6, 14, 16 around a 0 baseline
    cases.append(("sentinels", edge))
    return [(name, np.ascontiguousarray(data, np.uint8)) for name, data in cases]


CASES = _cases()


@pytest.mark.parametrize(("name", "data"), CASES, ids=[name for name, _ in CASES])
def test_attributes_round_trip_through_the_reference_decoder(
    name: str, data: NDArray[np.uint8]
) -> None:
    encoded = encode_attributes(data)
    assert decode_attributes(encoded, *data.shape) == data.tobytes()


def test_attributes_compress_what_is_smooth_and_bound_what_is_not() -> None:
    noise = rng.integers(0, 256, (10_000, 8)).astype(np.uint8)
    # Deltas of -1..1 fit 2 bits (a quarter); -2..2 mostly 4 bits (about a half).
    assert len(encode_attributes(_smooth(10_000, 8, step=1))) < 80_000 * 0.3
    assert len(encode_attributes(_smooth(10_000, 8, step=2))) < 80_000 * 0.55
    # Incompressible bytes: 16 per group of 16 plus the headers, blocks and tail.
    assert len(encode_attributes(noise)) < noise.nbytes * 1.02 + 64
    # All zeros: the header bits and nothing else (39 blocks of 256 with 4 header bytes
    # per byte position, one of 16 with 1), then the 32-byte tail.
    assert len(encode_attributes(np.zeros((10_000, 8), np.uint8))) == 1 + 39 * 8 * 4 + 8 + 32


def test_attributes_refuse_what_the_bitstream_cannot_hold() -> None:
    for bad in (np.zeros((4, 6), np.uint8), np.zeros((4, 260), np.uint8), np.zeros(8, np.uint8)):
        with pytest.raises(ValueError):
            encode_attributes(bad)
    with pytest.raises(ValueError):
        encode_attributes(np.zeros((4, 4), np.int16))  # type: ignore[arg-type]


def test_the_reference_decoder_notices_a_stream_cut_short() -> None:
    encoded = encode_attributes(_smooth(500, 8))
    with pytest.raises((DecodeError, IndexError)):
        decode_attributes(encoded[:-40] + encoded[-32:], 500, 8)


@pytest.mark.parametrize(
    "indices",
    [
        [0, 1, 2, 2, 1, 3],
        [5, 0, 70000, 3, 2**30 - 1, 0],
        list(rng.integers(0, 65534, 3000)),
        list(np.arange(30000) // 3 + np.tile([0, 1, 2], 10000)),
    ],
    ids=["quad", "far-apart", "random", "strip-like"],
)
def test_indices_round_trip_through_the_reference_decoder(indices: list[int]) -> None:
    encoded = encode_indices(np.array(indices, np.int64))
    assert decode_indices(encoded, len(indices)) == [int(i) for i in indices]


def test_indices_cost_a_byte_where_they_follow_each_other() -> None:
    indices = np.arange(3000) // 3 + np.tile([0, 1, 2], 1000)
    assert len(encode_indices(indices)) < 3000 + 8
    with pytest.raises(ValueError):
        encode_indices(np.array([0, 2**31], np.int64))


def _meshoptimizer(streams: list[dict[str, object]]) -> list[object]:
    node = shutil.which("node")
    if node is None or not (ROOT / "node_modules" / "meshoptimizer").is_dir():
        pytest.skip("node or node_modules/meshoptimizer missing (scripts/install installs them)")
    run = subprocess.run(
        [node, str(ROOT / "tests" / "meshopt_roundtrip.mjs")],
        input=json.dumps(streams),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    decoded: list[object] = json.loads(run.stdout)
    return decoded


def test_meshoptimizers_own_decoder_reads_what_we_write() -> None:
    """The viewer's decoder (meshoptimizer 1.3 from npm) gives back every byte."""
    streams, expected = [], []
    for name, data in CASES:
        streams.append(
            {"mode": "ATTRIBUTES", "count": data.shape[0], "stride": data.shape[1],
             "data": base64.b64encode(encode_attributes(data)).decode(), "name": name}
        )  # fmt: skip
        expected.append(data.tobytes())
    for width in (2, 4):
        indices = rng.integers(0, 60000, 999)
        streams.append(
            {"mode": "INDICES", "count": len(indices), "stride": width,
             "data": base64.b64encode(encode_indices(indices)).decode()}
        )  # fmt: skip
        expected.append(indices.astype("<u2" if width == 2 else "<u4").tobytes())
    decoded = _meshoptimizer(streams)
    for stream, want, got in zip(streams, expected, decoded, strict=True):
        assert isinstance(got, str), (stream.get("name"), got)
        assert base64.b64decode(got) == want, stream.get("name")
