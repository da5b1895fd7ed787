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

from meshkit.meshopt import (
    encode_attributes,
    encode_triangles,
    locality_order,
    max_block_elements,
)
from tests.support.meshopt_reference import DecodeError, decode_attributes, decode_triangles

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


def _canonical(faces: NDArray[np.int64]) -> NDArray[np.int64]:
    """Each triangle started at its smallest index (a rotation keeps the winding)."""
    start = np.argmin(faces, axis=1)
    rows = np.arange(len(faces))
    return np.stack([faces[rows, (start + k) % 3] for k in range(3)], axis=1)


def _meshes() -> list[tuple[str, NDArray[np.int64], int]]:
    n = 40  # a grid of quads in row order, as marching cubes emits them, more or less
    ids = np.arange(n * n).reshape(n, n)
    a, b, c, d = ids[:-1, :-1].ravel(), ids[:-1, 1:].ravel(), ids[1:, :-1].ravel(), ids[1:, 1:]
    grid = np.concatenate([np.stack([a, c, b], 1), np.stack([b, c, d.ravel()], 1)])
    strip = np.array([[i, i + 1, i + 2] if i % 2 == 0 else [i + 1, i, i + 2] for i in range(500)])
    return [
        ("one", np.array([[0, 1, 2]]), 3),
        ("grid", grid, n * n),
        ("grid-interleaved", grid.reshape(2, -1, 3).transpose(1, 0, 2).reshape(-1, 3), n * n),
        ("strip", strip, 502),
        ("random", rng.integers(0, 5000, (3000, 3)), 5000),  # no shared edges: explicit
        ("degenerate", np.array([[0, 0, 1], [1, 1, 1], [2, 0, 2], [0, 1, 2], [2, 1, 0]]), 3),
        ("unused-vertices", np.array([[7, 3, 9], [3, 7, 1]]), 12),
        ("far-apart", np.array([[0, 70000, 1], [200000, 5, 70000]]), 200001),
    ]


MESHES = _meshes()


@pytest.mark.parametrize(("name", "faces", "count"), MESHES, ids=[m[0] for m in MESHES])
def test_triangles_round_trip_through_the_reference_decoder(
    name: str, faces: NDArray[np.int64], count: int
) -> None:
    stream, order = encode_triangles(faces, count)
    decoded = np.array(decode_triangles(stream, faces.size), np.int64).reshape(-1, 3)
    # The same triangles in the same order and winding, in the stream's numbering...
    assert np.array_equal(_canonical(order[decoded]), _canonical(faces))
    # ...which numbers the vertices in use as they first appear, and only those.
    assert sorted(order.tolist()) == sorted(set(faces.ravel().tolist()))
    first = [int(v) for v in dict.fromkeys(decoded.ravel().tolist())]
    assert first == sorted(first)


def test_triangles_cost_a_byte_where_the_mesh_is_a_clean_strip() -> None:
    _, faces, count = MESHES[3]  # the strip
    assert len(encode_triangles(faces, count)[0]) < len(faces) * 1.05 + 17


@pytest.mark.parametrize(("name", "faces", "count"), MESHES, ids=[m[0] for m in MESHES])
def test_locality_order_is_a_permutation(name: str, faces: NDArray[np.int64], count: int) -> None:
    order = locality_order(faces)
    assert sorted(order.tolist()) == list(range(len(faces)))
    assert locality_order(np.zeros((0, 3), np.int64)).tolist() == []


def _adjacent(a: NDArray[np.int64], b: NDArray[np.int64]) -> bool:
    return len(set(a.tolist()) & set(b.tolist())) >= 2


def test_locality_order_makes_triangles_follow_their_neighbours() -> None:
    """The grid's two halves one after the other (as a mesh exporter may list them):
    no triangle follows a neighbour; reordered, nearly all do, and the codes shrink."""
    _, faces, count = MESHES[1]
    assert not any(_adjacent(faces[i], faces[i + 1]) for i in range(len(faces) - 1))
    ordered = faces[locality_order(faces)]
    follow = sum(_adjacent(ordered[i], ordered[i + 1]) for i in range(len(ordered) - 1))
    assert follow > 0.9 * (len(ordered) - 1)
    before, after = (len(encode_triangles(f, count)[0]) for f in (faces, ordered))
    assert after < 0.6 * before


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
    """The viewer's decoder (meshoptimizer 1.3 from npm) gives back every byte, and the
    same triangles as the reference decoder."""
    streams, expected = [], []
    for name, data in CASES:
        streams.append(
            {"mode": "ATTRIBUTES", "count": data.shape[0], "stride": data.shape[1],
             "data": base64.b64encode(encode_attributes(data)).decode(), "name": name}
        )  # fmt: skip
        expected.append(data.tobytes())
    orders = {}
    for name, faces, count in MESHES:
        stream, orders[name] = encode_triangles(faces, count)
        width = 2 if len(orders[name]) < 0xFFFF else 4
        streams.append(
            {"mode": "TRIANGLES", "count": faces.size, "stride": width,
             "data": base64.b64encode(stream).decode(), "name": name}
        )  # fmt: skip
        reference = np.array(decode_triangles(stream, faces.size))
        expected.append(reference.astype("<u2" if width == 2 else "<u4").tobytes())
    decoded = _meshoptimizer(streams)
    for stream, want, got in zip(streams, expected, decoded, strict=True):
        assert isinstance(got, str), (stream.get("name"), got)
        assert base64.b64decode(got) == want, stream.get("name")
