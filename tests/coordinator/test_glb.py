from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trimesh

from coordinator.meshes.glb import normalise_glb, read_mesh
from coordinator.meshes.glbcheck import GlbLimits, InvalidModelError
from tests.support import glbbombs
from tests.support.glbbombs import build_glb, grid, mesh_glb, split_glb
from tests.support.memprobe import probe

MIB = 1024 * 1024
LIMITS = GlbLimits()
INSPECT = "coordinator.meshes.convert:inspect_glb"


@pytest.fixture(scope="module")
def warm() -> bytes:
    return mesh_glb(*grid(200))


def small() -> tuple[dict[str, Any], bytes]:
    return split_glb(mesh_glb(*grid(200)))


@pytest.mark.parametrize(
    ("bomb", "reason"),
    [
        ("stride", "overlap"),
        ("instancing", "with instancing"),
        ("nested_instancing", "more than one parent"),
    ],
)
def test_glb_bomb_is_rejected_at_a_small_multiple_of_its_size(
    bomb: str, reason: str, warm: bytes, tmp_path: Path
) -> None:
    data: bytes = glbbombs.BOMBS[bomb]()  # type: ignore[operator]
    # Each of these cost the old checker 2.5-6 GB (or more than the 4 GiB cap here).
    result = probe(INSPECT, data, warm, tmp_path, 64 * MIB)
    assert reason in result.outcome
    assert result.rise < 2 * len(data) + 8 * MIB, result


def test_glb_unused_accessors_are_never_read(warm: bytes, tmp_path: Path) -> None:
    data = glbbombs.unused_accessor_bomb()
    result = probe(INSPECT, data, warm, tmp_path, 64 * MIB)
    assert result.outcome == "ok"
    assert result.rise < 2 * len(data) + 8 * MIB, result
    glb, info = normalise_glb(data, LIMITS)
    assert info.faces == len(grid(200)[1])
    assert len(split_glb(glb)[0]["accessors"]) == 4  # the big ones are dropped


def test_glb_huge_legit_mesh_is_accepted_at_about_its_size(warm: bytes, tmp_path: Path) -> None:
    data = glbbombs.huge_mesh(600_000)
    result = probe(INSPECT, data, warm, tmp_path, 64 * MIB)
    assert result.outcome == "ok"
    # The normalised copy plus a few temporaries: the old check took about 8x.
    assert result.rise < 2 * len(data) + 8 * MIB, result


def test_glb_instancing_within_limits_is_expanded_at_bounded_cost(
    warm: bytes, tmp_path: Path
) -> None:
    data = glbbombs.instancing_bomb(instances=100, faces=2000, depth=2)
    glb, info = normalise_glb(data, LIMITS)
    assert info.faces == 200 * len(grid(2000)[1])
    result = probe(INSPECT, data, warm, tmp_path, 64 * MIB)
    assert result.outcome == "ok"
    assert result.rise < 3 * len(glb) + 8 * MIB, result


def test_glb_normalised_model_applies_node_transforms() -> None:
    verts, faces, colors = grid(8)
    nodes = [{"mesh": 0, "translation": [10.0, 0.0, 0.0]}, {"mesh": 0, "scale": [-1.0, 1.0, 1.0]}]
    data = mesh_glb(verts, faces, colors, nodes=nodes)
    doc, binary = split_glb(data)
    doc["scenes"] = [{"nodes": [0, 1]}]
    mesh = read_mesh(normalise_glb(build_glb(doc, binary), LIMITS)[0], LIMITS)
    n = len(verts)
    assert np.allclose(mesh.positions[:n], verts + np.array([10.0, 0.0, 0.0]))
    assert np.allclose(mesh.positions[n:], verts * [-1.0, 1.0, 1.0])
    # The mirrored copy keeps its triangles facing outwards: the winding flips.
    assert (mesh.faces[len(faces) :] - n)[:, [0, 2, 1]].tolist() == faces.tolist()
    assert mesh.colors is not None and np.allclose(mesh.colors[n:], colors)


def test_glb_normalisation_is_idempotent_and_keeps_linear_colours() -> None:
    verts, faces, colors = grid(500)
    glb, info = normalise_glb(mesh_glb(verts, faces, colors), LIMITS)
    again, same = normalise_glb(glb, LIMITS)
    assert again == glb and same == info and info.has_colors
    mesh = read_mesh(glb, LIMITS)
    assert mesh.colors is not None and np.array_equal(mesh.colors, colors)
    loaded = trimesh.load(io.BytesIO(glb), file_type="glb", force="mesh", process=False)
    assert len(loaded.faces) == len(faces)  # type: ignore[attr-defined]


def _with(change: object) -> bytes:
    doc, binary = small()
    change(doc)  # type: ignore[operator]
    return build_glb(doc, binary)


def _view(doc: dict[str, Any], **fields: object) -> None:
    doc["bufferViews"][1].update(fields)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: _view(d, byteStride=4), "overlap"),
        (lambda d: _view(d, byteStride=0), "byteStride 0"),
        (lambda d: _view(d, byteStride=14), "byteStride 14"),
        (lambda d: _view(d, byteStride=256), "byteStride 256"),
        (lambda d: d["accessors"][1].update(byteOffset=2), "aligned"),
        (lambda d: d["accessors"][1].update(sparse={"count": 1}), "sparse"),
        (lambda d: d["accessors"][1].update(componentType=5123), "expected"),
        (lambda d: d["accessors"][0].update(count=10), "divisible by 3"),
        (lambda d: d.update(extensionsRequired=["KHR_draco_mesh_compression"]), "extensions"),
        (lambda d: d.update(nodes=[{"mesh": 0}] * 1025), "over the limit of 1024"),
        (lambda d: d.update(accessors=d["accessors"] * 300), "over the limit of 1024"),
        (lambda d: d["meshes"][0].update(primitives=d["meshes"][0]["primitives"] * 5000), "4096"),
        (
            lambda d: d.update(nodes=[{"mesh": 0, "children": [1]}, {"children": [0]}], scenes=[]),
            "cycle",
        ),
        (lambda d: d.update(nodes=[{"children": [0]}]), "bad child"),
        (lambda d: d.update(nodes=[{"mesh": 0, "matrix": [1.0] * 15}]), "matrix"),
        (lambda d: d.update(nodes=[{"mesh": 0, "scale": [1e39, 1, 1]}]), "NaN or infinite"),
        (lambda d: d.update(buffers=[{"byteLength": 1}, {"uri": "x"}]), "over the limit of 1"),
    ],
)
def test_glb_structure_outside_the_limits_is_rejected(change: object, reason: str) -> None:
    with pytest.raises(InvalidModelError, match=reason):
        read_mesh(_with(change), LIMITS)


def test_glb_nodes_deeper_than_the_limit_are_rejected() -> None:
    nodes: list[dict[str, Any]] = [{"children": [i + 1]} for i in range(40)] + [{"mesh": 0}]
    with pytest.raises(InvalidModelError, match="deeper than 32"):
        read_mesh(_with(lambda d: d.update(nodes=nodes, scenes=[{"nodes": [0]}])), LIMITS)


def test_glb_json_over_its_limit_is_rejected_before_parsing() -> None:
    data = _with(lambda d: d.update(extras={"pad": "x" * (2 * MIB)}))
    with pytest.raises(InvalidModelError, match="JSON chunk is"):
        read_mesh(data, LIMITS)


def test_glb_decoded_size_is_bounded_by_the_file_size() -> None:
    data = glbbombs.instancing_bomb(instances=50, faces=2000)
    limits = GlbLimits(expansion_floor_bytes=MIB)
    with pytest.raises(InvalidModelError, match="would decode to"):
        read_mesh(data, limits)
    assert len(read_mesh(data, LIMITS).faces) == 50 * len(grid(2000)[1])
